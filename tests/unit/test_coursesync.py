"""The merge rules of the course sync (pure plan, then real files in temporary homes)."""

import json
import os

import pytest

from spawner.courses import sync as cs
from spawner.courses.sync import Action, plan, upstream_name


@pytest.mark.parametrize("path,expected", [
    ("A.ipynb", "A.upstream.ipynb"),
    ("week1/B.ipynb", "week1/B.upstream.ipynb"),
    ("Makefile", "Makefile.upstream"),
    (".env", ".env.upstream"),
    ("data.tar.gz", "data.tar.upstream.gz"),
])
def test_upstream_name(path, expected):
    assert upstream_name(path) == expected


def kinds(actions):
    return {a.path: a.kind for a in actions}


def test_first_sync_adds_everything():
    assert kinds(plan({"a": "1", "b": "2"}, {}, {"a": None, "b": None}, False)) == {"a": cs.ADD, "b": cs.ADD}


def test_untouched_file_is_updated_and_edited_file_kept_with_upstream_beside():
    acts = plan(upstream={"A": "a2", "B": "b2"}, delivered={"A": "a1", "B": "b1"},
                local={"A": "user-edit", "B": "b1"}, restore=False)
    assert kinds(acts) == {"A": cs.BESIDE, "B": cs.UPDATE}
    beside = next(a for a in acts if a.kind == cs.BESIDE)
    assert beside.upstream == "a2" and "A.upstream" in beside.note


def test_edit_kept_quietly_while_upstream_unchanged():
    assert kinds(plan({"A": "a1"}, {"A": "a1"}, {"A": "mine"}, False)) == {"A": cs.KEEP}


def test_deleted_file_stays_deleted_unless_restore():
    assert kinds(plan({"A": "a2"}, {"A": "a1"}, {"A": None}, False)) == {"A": cs.DELETED}
    assert kinds(plan({"A": "a2"}, {"A": "a1"}, {"A": None}, True)) == {"A": cs.RESTORE}


def test_users_own_file_of_the_same_name_is_never_overwritten():
    # a file the sync never delivered but the user has: theirs stays, ours goes beside
    assert kinds(plan({"A": "a1"}, {}, {"A": "theirs"}, False)) == {"A": cs.BESIDE}
    assert kinds(plan({"A": "a1"}, {}, {"A": "a1"}, False)) == {"A": cs.SAME}


def test_files_dropped_upstream_go_only_if_untouched():
    acts = plan({}, {"x": "1", "y": "1", "z": "1"}, {"x": "1", "y": "edited", "z": None}, False)
    assert kinds(acts) == {"x": cs.RETRACT, "y": cs.ORPHAN, "z": cs.GONE}
    assert all(a.upstream is None for a in acts)


def test_plan_is_deterministic():
    up = {f"n{i}.ipynb": str(i) for i in range(20)}
    assert plan(up, {}, dict.fromkeys(up), False) == [Action(cs.ADD, p, up[p]) for p in sorted(up)]


# --- real files ----------------------------------------------------------------------------------


def publish(root, course, version, files, restore=False, publication=None):
    """Write a course version the way CourseStore does (layout only)."""
    vdir = root / course / cs.VERSIONS / version
    hashes = {}
    for rel, text in files.items():
        p = vdir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        hashes[rel] = cs.sha256_file(p)
    cs.write_json(root / course / cs.CURRENT, {"course": course, "version": version, "files": hashes,
                                                "restore": restore, "publication": publication or version})


@pytest.fixture
def env(tmp_path):
    root, home = tmp_path / "courses", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    return root, home


def read(home, rel):
    return (home / "notebooks" / rel).read_text()


def test_issue_scenario_edit_kept_upstream_beside_other_updated(env):
    root, home = env
    publish(root, "intro", "v1", {"A.ipynb": "A1", "B.ipynb": "B1", "sub/C.ipynb": "C1"})
    cs.sync_all(root, home, log=lambda m: None)
    assert read(home, "intro/A.ipynb") == "A1" and read(home, "intro/sub/C.ipynb") == "C1"

    (home / "notebooks/intro/A.ipynb").write_text("A1 + my work")
    publish(root, "intro", "v2", {"A.ipynb": "A2", "B.ipynb": "B2", "sub/C.ipynb": "C1"})
    lines = []
    [res] = cs.sync_all(root, home, log=lines.append)
    assert read(home, "intro/A.ipynb") == "A1 + my work"
    assert read(home, "intro/A.upstream.ipynb") == "A2"
    assert read(home, "intro/B.ipynb") == "B2"
    assert res.counts == {cs.BESIDE: 1, cs.UPDATE: 1, cs.SAME: 1}
    log = (home / "notebooks/.stackhub/sync.log").read_text()
    assert "kept your edit of A.ipynb" in log and "A.upstream.ipynb" in log
    assert any("A.upstream.ipynb" in ln for ln in lines)
    status = json.loads((home / "notebooks/.stackhub/status.json").read_text())
    assert status["intro"]["version"] == "v2"

    # a sync with nothing new changes nothing and does not rewrite the .upstream file
    (home / "notebooks/intro/A.upstream.ipynb").unlink()
    [res] = cs.sync_all(root, home, log=lambda m: None)
    assert res.counts == {cs.KEEP: 1, cs.SAME: 2}
    assert not (home / "notebooks/intro/A.upstream.ipynb").exists()


def test_deleted_stays_deleted_until_a_restore_publication_once(env):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1", "B.ipynb": "B1"})
    cs.sync_all(root, home, log=lambda m: None)
    (home / "notebooks/c/A.ipynb").unlink()
    publish(root, "c", "v2", {"A.ipynb": "A2", "B.ipynb": "B2"})
    cs.sync_all(root, home, log=lambda m: None)
    assert not (home / "notebooks/c/A.ipynb").exists() and read(home, "c/B.ipynb") == "B2"

    publish(root, "c", "v2", {"A.ipynb": "A2", "B.ipynb": "B2"}, restore=True, publication="p3")
    cs.sync_all(root, home, log=lambda m: None)
    assert read(home, "c/A.ipynb") == "A2"
    # the same restore publication does not bring it back a second time
    (home / "notebooks/c/A.ipynb").unlink()
    cs.sync_all(root, home, log=lambda m: None)
    assert not (home / "notebooks/c/A.ipynb").exists()


def test_users_files_beside_the_course_are_untouched_and_retraction_is_safe(env):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1", "old.ipynb": "O1", "edited.ipynb": "E1"})
    cs.sync_all(root, home, log=lambda m: None)
    (home / "notebooks/c/mine.ipynb").write_text("mine")
    (home / "notebooks/c/edited.ipynb").write_text("E1 edited")
    publish(root, "c", "v2", {"A.ipynb": "A1"})
    cs.sync_all(root, home, log=lambda m: None)
    assert not (home / "notebooks/c/old.ipynb").exists()  # untouched and retracted
    assert read(home, "c/edited.ipynb") == "E1 edited"
    assert read(home, "c/mine.ipynb") == "mine"


def test_existing_directory_without_manifest_keeps_users_files(env):
    root, home = env
    (home / "notebooks/c").mkdir(parents=True)
    (home / "notebooks/c/A.ipynb").write_text("theirs")
    publish(root, "c", "v1", {"A.ipynb": "A1"})
    cs.sync_all(root, home, log=lambda m: None)
    assert read(home, "c/A.ipynb") == "theirs" and read(home, "c/A.upstream.ipynb") == "A1"


def test_a_directory_in_the_way_spoils_only_that_file(env):
    root, home = env
    (home / "notebooks/c/A.ipynb").mkdir(parents=True)
    publish(root, "c", "v1", {"A.ipynb": "A1", "B.ipynb": "B1"})
    [res] = cs.sync_all(root, home, log=lambda m: None)
    assert read(home, "c/B.ipynb") == "B1"
    assert read(home, "c/A.upstream.ipynb") == "A1"  # A.ipynb is the user's directory


def test_main_json_and_on_start_switch(env, capsys, monkeypatch):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1"})
    monkeypatch.setenv(cs.ON_START_ENV, "0")
    assert cs.main(["--root", str(root), "--home", str(home), "--on-start"]) == 0
    assert not (home / "notebooks").exists()
    monkeypatch.delenv(cs.ON_START_ENV)
    assert cs.main(["--root", str(root), "--home", str(home), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["courses"]["c"]["version"] == "v1" and out["courses"]["c"]["counts"] == {"add": 1}
    # no courses mounted: fine at start, an error when asked for
    assert cs.main(["--root", str(root / "nope"), "--home", str(home), "--on-start", "--quiet"]) == 0
    assert cs.main(["--root", str(root / "nope"), "--home", str(home), "--quiet"]) == 1


def test_unpublished_course_leaves_the_home_alone(env):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1"})
    cs.sync_all(root, home, log=lambda m: None)
    import shutil
    shutil.rmtree(root / "c")
    assert cs.sync_all(root, home, log=lambda m: None) == []
    assert read(home, "c/A.ipynb") == "A1"


# --- a home the user controls, and the time budget ----------------------------------------------


def test_a_status_or_manifest_that_is_a_symlink_to_dev_zero_is_not_read(env):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1"})
    state = home / "notebooks" / cs.STATE_DIR
    state.mkdir(parents=True)
    os.symlink("/dev/zero", state / cs.STATUS_FILE)
    os.symlink("/dev/zero", state / "c.json")
    [res] = cs.sync_all(root, home, log=lambda m: None)  # returns: nothing read from /dev/zero
    assert res.counts == {"add": 1} and read(home, "c/A.ipynb") == "A1"


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "{not json", '{"format": 1, "files": {"A.ipynb": 5}}',
                                     '{"format": 1, "files": []}'])
def test_a_manifest_of_the_wrong_shape_counts_as_no_manifest(env, content):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1"})
    (home / "notebooks/.stackhub").mkdir(parents=True)
    (home / "notebooks/.stackhub/c.json").write_text(content)
    [res] = cs.sync_all(root, home, log=lambda m: None)
    assert res.counts == {"add": 1}


def test_read_home_json_refuses_large_files_fifos_and_wrong_types(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "y" * 100}))
    assert cs.read_home_json(big, {}, limit=50) == {}
    assert cs.read_home_json(big, {})["x"].startswith("y")
    assert cs.read_home_json(big, []) == []
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cs.read_home_json(fifo, {}) == {}  # returns at once: not a regular file


def test_the_time_budget_stops_copying_and_the_next_sync_goes_on(env, monkeypatch):
    root, home = env
    publish(root, "c", "v1", {f"n{i}.ipynb": str(i) for i in range(5)})
    clock = iter([0.0, 0.0, 0.0, 0.0, 100.0] + [100.0] * 50)
    monkeypatch.setattr(cs.time, "monotonic", lambda: next(clock))
    [res] = cs.sync_all(root, home, log=lambda m: None, budget=10)
    done = res.counts["add"]
    assert 0 < done < 5 and res.unfinished == 5 - done
    assert f"{5 - done} files left for the next sync" in res.summary()
    status = json.loads((home / "notebooks/.stackhub/status.json").read_text())
    assert "c" not in status  # not this home's version yet
    monkeypatch.undo()
    [res] = cs.sync_all(root, home, log=lambda m: None, budget=10)
    assert res.counts == {"add": 5 - done, "same": done} and res.unfinished == 0
    assert sorted(p.name for p in (home / "notebooks/c").iterdir()) == [f"n{i}.ipynb" for i in range(5)]


def test_budget_comes_from_the_environment(env, capsys, monkeypatch):
    root, home = env
    publish(root, "c", "v1", {"A.ipynb": "A1"})
    seen = {}
    monkeypatch.setattr(cs, "sync_all", lambda *a, **kw: seen.update(kw) or [])
    monkeypatch.setenv(cs.BUDGET_ENV, "7")
    assert cs.main(["--root", str(root), "--home", str(home), "--on-start", "--quiet"]) == 0
    assert seen["budget"] == 7
