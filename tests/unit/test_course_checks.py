"""The course x tag check as data: the container, reading the check program, kept results, warnings."""

import json

import pytest

from spawner.core.config import StackhubConfig
from spawner.courses import check_run
from spawner.courses.checks import (ERROR, FAILED, NOT_CHECKED, PASSED, TIMEOUT, VERSIONS_KEPT, CheckStore, TagRun,
                                    check_container, describe, matrix, session_warnings)


def ev(**kw):
    return json.dumps(kw)


def test_the_check_container_runs_as_the_attendee_with_data_and_courses_read_only_and_nothing_else():
    cfg = StackhubConfig.model_validate({"hub": {"prefix": "stackhub-x"}, "courses": {"checkTimeout": 30}})
    c = check_container(cfg, image="sha256:abc", tag="w_2026_43", course="intro", version="c123", job="7",
                        notebooks=3)
    assert c.uid == 1000 and c.image == "sha256:abc"
    assert c.command == ("python", "/opt/stackhub/courses/.tools/stackhub-course-check",
                         "/opt/stackhub/courses/intro/versions/c123", "--course", "intro", "--timeout", "30")
    assert {(m.source, m.target, m.read_only) for m in c.mounts} == {
        ("stackhub-data", "/data", True), ("stackhub-courses", "/opt/stackhub/courses", True)}
    assert c.network == "none"
    assert c.environment["HOME"] == "/home/course-check"
    # the home is an empty tmpfs of the attendee's uid: no volume, nothing kept
    assert "uid=1000" in c.hardening.tmpfs["/home"] and c.hardening.read_only_root
    assert c.hardening.cap_drop == ("ALL",) and c.hardening.no_new_privileges
    assert c.deadline == 30 * 3 + 60
    assert c.name == "stackhub-x-check-7-w-2026-43"
    assert c.labels["stackhub.deployment"] == "stackhub-x" and c.labels["stackhub.role"] == "course-check"


def test_a_run_that_passes_every_notebook_passes():
    run = TagRun("w_2026_43")
    for line in [ev(event="begin", total=2), ev(event="start", notebook="a.ipynb"),
                 ev(event="done", notebook="a.ipynb", state="passed", seconds=1.5), "[IPKernelApp] WARNING noise",
                 ev(event="start", notebook="b.ipynb"), ev(event="done", notebook="b.ipynb", state="passed"),
                 ev(event="end")]:
        run.feed(line)
    run.finish(exit_code=0, seconds=12.3)
    assert run.state == PASSED and [n["notebook"] for n in run.notebooks] == ["a.ipynb", "b.ipynb"]
    assert run.to_json()["seconds"] == 12.3 and run.to_json()["checked"]


def test_a_failing_cell_is_reported_with_its_number_and_error():
    run = TagRun("w_2026_42")
    run.feed(ev(event="begin", total=1))
    run.feed(ev(event="start", notebook="a.ipynb"))
    run.feed(ev(event="done", notebook="a.ipynb", state="failed", cell=7, error="KeyError: 'x'", source="d['x']"))
    run.feed(ev(event="end"))
    run.finish(exit_code=0, seconds=3)
    assert run.state == FAILED
    assert run.notebooks[0]["cell"] == 7 and run.notebooks[0]["error"] == "KeyError: 'x'"
    assert describe("intro", run.to_json()) == "intro fails on w_2026_42: a.ipynb, cell 7: KeyError: 'x'"


def test_a_container_cut_at_its_deadline_reports_the_notebook_it_was_in():
    run = TagRun("v30_0_0")
    run.feed(ev(event="begin", total=2))
    run.feed(ev(event="start", notebook="hang.ipynb"))
    run.finish(exit_code=None, seconds=400, timed_out=True)
    assert run.state == FAILED
    assert run.notebooks == [{"notebook": "hang.ipynb", "state": TIMEOUT, "cell": None, "seconds": None,
                              "error": "the check of this tag ran past its deadline (400 s) and was stopped"}]


@pytest.mark.parametrize("lines, code, why", [
    ([], 1, "exit status 1"),                                   # the program never started
    ([ev(event="begin", total=1)], 0, "stopped early"),         # it ended without its "end"
    ([ev(event="error", error="cannot copy the course")], 1, "cannot copy the course"),
    ([ev(event="begin", total=0), ev(event="end")], 0, "no notebooks"),
])
def test_a_check_that_could_not_run_is_an_error_not_a_pass(lines, code, why):
    run = TagRun("w_2026_43")
    for line in lines:
        run.feed(line)
    run.finish(exit_code=code, seconds=1, stderr="exit status 1" if code else "")
    assert run.state == ERROR and why in run.error


@pytest.mark.parametrize("line", ["not json", "{broken", json.dumps([1]), json.dumps({"event": "done"}),
                                  json.dumps({"event": "done", "notebook": 5}), "{" + "x" * 70000 + "}"])
def test_lines_that_are_not_events_are_ignored(line):
    run = TagRun("w")
    run.feed(line)
    assert run.notebooks == [] and run.total is None


def test_an_unknown_state_from_the_program_counts_as_failed():
    run = TagRun("w")
    run.feed(ev(event="done", notebook="a.ipynb", state="great"))
    assert run.notebooks[0]["state"] == FAILED


def test_results_are_kept_per_version_and_tag_and_a_new_version_is_not_checked(tmp_path):
    store = CheckStore(tmp_path / "checks.json")
    store.put("intro", "v1", {"tag": "w_2026_43", "state": PASSED})
    store.put("intro", "v1", {"tag": "w_2026_42", "state": FAILED})
    assert set(store.results("intro", "v1")) == {"w_2026_43", "w_2026_42"}
    assert store.results("intro", "v2") == {}
    m = matrix(store.results("intro", "v2"), ["w_2026_43", "v30_0_0"])
    assert {t: r["state"] for t, r in m.items()} == {"w_2026_43": NOT_CHECKED, "v30_0_0": NOT_CHECKED}
    # a new tag next to checked ones is not checked either
    m = matrix(store.results("intro", "v1"), ["w_2026_43", "w_2026_44"])
    assert m["w_2026_43"]["state"] == PASSED and m["w_2026_44"]["state"] == NOT_CHECKED


def test_only_the_newest_versions_are_kept(tmp_path):
    store = CheckStore(tmp_path / "checks.json")
    for i in range(VERSIONS_KEPT + 2):
        store.put("intro", f"v{i}", {"tag": "t", "state": PASSED})
    kept = set(json.loads((tmp_path / "checks.json").read_text())["intro"])
    assert kept == {f"v{i}" for i in range(2, VERSIONS_KEPT + 2)}


def test_a_damaged_results_file_reads_as_nothing_checked(tmp_path):
    path = tmp_path / "checks.json"
    for text in ("not json", "[1, 2]", json.dumps({"intro": "x"}), json.dumps({"intro": {"v1": "x"}})):
        path.write_text(text)
        assert CheckStore(path).results("intro", "v1") == {}
    CheckStore(path).put("intro", "v1", {"tag": "t", "state": PASSED})
    assert CheckStore(path).results("intro", "v1")["t"]["state"] == PASSED


def test_a_session_on_a_failing_tag_gets_a_warning_naming_the_cell(tmp_path):
    store = CheckStore(tmp_path / "checks.json")
    store.put("intro", "v2", {"tag": "w_2026_42", "state": FAILED, "notebooks": [
        {"notebook": "03.ipynb", "state": FAILED, "cell": 7, "error": "KeyError: 'band'"}]})
    store.put("intro", "v2", {"tag": "w_2026_43", "state": PASSED, "notebooks": []})
    store.put("other", "v1", {"tag": "w_2026_42", "state": PASSED, "notebooks": []})
    published = [("intro", "v2"), ("other", "v1")]
    warnings = session_warnings(published, "w_2026_42", store)
    assert warnings == [{"course": "intro", "version": "v2", "tag": "w_2026_42", "state": FAILED,
                         "message": "intro fails on w_2026_42: 03.ipynb, cell 7: KeyError: 'band'"}]
    assert session_warnings(published, "w_2026_43", store) == [
        {"course": "other", "version": "v1", "tag": "w_2026_43", "state": NOT_CHECKED,
         "message": "other (version v1) was not checked on w_2026_43"}]
    # the results of an older version say nothing about the current one
    assert session_warnings([("intro", "v3")], "w_2026_42", store)[0]["state"] == NOT_CHECKED


def test_the_check_program_runs_notebooks_in_name_order_without_copies_or_checkpoints(tmp_path):
    for rel in ["02-b.ipynb", "01-a.ipynb", "sub/03-c.ipynb", "01-a.upstream.ipynb", ".ipynb_checkpoints/01-a.ipynb",
                ".hidden/x.ipynb", "notes.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    assert [str(p.relative_to(tmp_path)) for p in check_run.notebooks(tmp_path)] == [
        "01-a.ipynb", "02-b.ipynb", "sub/03-c.ipynb"]


def test_cells_are_counted_as_people_count_them_code_cells_from_one():
    class Cell:
        def __init__(self, kind):
            self.cell_type = kind

    class NB:
        cells = [Cell("markdown"), Cell("code"), Cell("markdown"), Cell("code"), Cell("code")]

    assert check_run.code_cell_number(NB(), 3) == 2 and check_run.code_cell_number(NB(), 4) == 3


def test_the_shipped_course_names_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a course name"):
        StackhubConfig.model_validate({"courses": {"shipped": ["../etc"]}})
    assert StackhubConfig().courses.shipped == ["getting-started"]


def test_every_notebook_of_the_shipped_course_ends_with_an_assertion_cell():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "courses" / "getting-started"
    books = sorted(root.glob("*.ipynb"))
    assert len(books) == 6
    for path in books:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "lsst", path.name
        last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
        assert "assert " in "".join(last["source"]), f"{path.name}: the last code cell asserts nothing"
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{path.name} has outputs"


def test_the_shipped_course_is_published_once_and_never_again(tmp_path):
    from spawner.cli.courses import publish_shipped

    calls = []
    published = set()

    def api(method, path, body=None, **kw):
        calls.append((method, path.split("?")[0]))
        if method == "GET":
            return {"courses": [{"course": c} for c in published]}
        published.add(path.split("?")[0].split("/")[1])
        return {"version": "c1", "files": 8}

    cfg = StackhubConfig()
    assert publish_shipped(cfg, tmp_path, log=lambda m: None, api=api) == ["getting-started"]
    assert calls == [("GET", "courses"), ("PUT", "courses/getting-started")]
    # an instructor removed it: the next `up` leaves it removed
    published.clear()
    calls.clear()
    assert publish_shipped(cfg, tmp_path, log=lambda m: None, api=api) == [] and calls == []
    # already published by someone else before the first `up`: not published over
    other = tmp_path / "other"
    other.mkdir()
    published.add("getting-started")
    assert publish_shipped(cfg, other, log=lambda m: None, api=api) == []
    assert ("PUT", "courses/getting-started") not in calls
