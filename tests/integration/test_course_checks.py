"""The tutorial out of the box (issue 14), on the real engine: the demo Butler data, the shipped
getting-started course run by a fresh user through the hub, and the course x tag check (a notebook
that fails on one tag only, a notebook that hangs) with the sessions page's warning."""

import json
import time
import uuid

import pytest
import requests

from spawner.cli.client import Client
from spawner.cli.courses import publish_shipped
from spawner.courses.checks import CHECK_ROLE
from spawner.deploy.demo_data import ensure_demo_data

from .browser import admin_browser
from .hubfixture import TEST_PREFIX, container_name
from .test_courses import cli, course_api, wait_course_service

SESSIONS_API = "services/stackhub-sessions/api"


def notebook(*cells: str) -> bytes:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5,
                       "metadata": {"kernelspec": {"name": "lsst", "display_name": "LSST", "language": "python"}},
                       "cells": [{"cell_type": "code", "metadata": {}, "id": f"c{i}", "execution_count": None,
                                  "outputs": [], "source": src} for i, src in enumerate(cells)]}).encode()


def publish_dir(hub, tmp_path, name, files: dict) -> str:
    src = tmp_path / name
    src.mkdir()
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    done = cli(hub, "publish", name, str(src))
    assert done.returncode == 0, done.stderr
    r = course_api(hub, "GET", "courses")
    return next(c["version"] for c in r.json()["courses"] if c["course"] == name)


@pytest.fixture(autouse=True)
def course_service(hub):
    """The hub answers before its managed services are routed: wait for the course service."""
    wait_course_service(hub)


def check_containers(hub):
    return hub.client.containers.list(all=True, filters={"label": [f"stackhub.role={CHECK_ROLE}",
                                                                   f"stackhub.deployment={TEST_PREFIX}"]})


def butler_versions(client, tags):
    out = {}
    for t in tags:
        labels = client.images.get(f"stackhub/lsst-stack:{t}").labels
        out[t] = json.loads(labels["stackhub.versions"])["lsst-daf-butler"]
    return out


@pytest.fixture(scope="module")
def two_tags(hub, stack_tags):
    """Two stack tags with different lsst-daf-butler versions (the weeklies when there are two)."""
    versions = butler_versions(hub.client, stack_tags)
    for a in stack_tags:
        for b in stack_tags:
            if versions[a] != versions[b]:
                return (a, versions[a]), (b, versions[b])
    pytest.fail(f"no two stack tags with different lsst-daf-butler versions: {versions}")


def test_the_demo_butler_repository_is_made_once_and_every_tag_reads_it(hub, stack_tags):
    client = hub.client
    volume = hub.deployment.cfg.volumes.data[0].source
    # `up` made it (the test session's first `up`); a second call finds it and makes nothing
    assert ensure_demo_data(client, hub.deployment.cfg, log=lambda m: None) is False
    script = ("from lsst.daf.butler import Butler; b = Butler('/data/butler', collections='demo/raw'); "
              "print(len(b.query_datasets('demo_image', instrument='DemoCam')), "
              "len(b.query_dimension_records('detector', instrument='DemoCam')))")
    for tag in stack_tags:
        out = client.containers.run(f"stackhub/lsst-stack:{tag}", ["bash", "-lc", f'python -c "{script}"'],
                                    user="1000", network_mode="none", remove=True,
                                    volumes={volume: {"bind": "/data", "mode": "ro"}})
        assert out.decode().split()[-2:] == ["12", "4"], (tag, out)
    out = client.containers.run(f"stackhub/lsst-stack:{stack_tags[0]}",
                                ["sh", "-c", "cat /data/README.md; ls -ln /data; touch /data/butler/x || echo refused"],
                                user="1000", remove=True, volumes={volume: {"bind": "/data", "mode": "rw"}})
    text = out.decode()
    assert "Butler repository" in text and "demo/raw" in text
    assert "refused" in text, "a user must not be able to write into the demo repository (root's, 0755)"


@pytest.fixture
def shipped(hub, tmp_path):
    """The shipped course published as the first `up` does, and unpublished after: the session's
    later tests (their users' homes, "sync now") must not find a course they did not publish."""
    api = Client(hub.url, hub.token, hub.ca, "stackhub-courses")
    publish_shipped(hub.deployment.cfg, tmp_path, log=lambda m: None, api=api)
    yield api
    course_api(hub, "DELETE", "courses/getting-started")


def test_a_fresh_user_runs_the_whole_getting_started_course_through_the_hub(hub, user, shipped):
    """The shipped course, published as the first `up` does, in a fresh user's server: every
    notebook runs headless with nbclient in the user's own container, with no error."""
    name = user("gs")
    hub.spawn(name, {"image_tag": "recommended"})
    c = hub.client.containers.get(container_name(name))
    runner = """
import json, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient
results = {}
for path in sorted((Path.home() / "notebooks" / "getting-started").glob("[0-9]*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=300, kernel_name="lsst", resources={"metadata": {"path": str(path.parent)}}).execute()
        results[path.name] = "ok"
    except Exception as e:
        results[path.name] = f"{type(e).__name__}: {str(e)[-1500:]}"
print(json.dumps(results))
"""
    code, out = c.exec_run(["python", "-c", runner], user="1000", demux=True)
    stdout = (out[0] or b"").decode()
    results = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(results) == ["01-the-stack.ipynb", "02-query-the-butler.ipynb", "03-look-at-an-image.ipynb",
                               "04-run-a-pipeline.ipynb", "05-develop-a-package.ipynb", "06-parallel.ipynb"]
    assert all(v == "ok" for v in results.values()), results
    # the pipeline wrote into the user's own repository and collection
    code, out = c.exec_run(["bash", "-lc", f"butler query-collections ~/repos/getting-started 'u/{name}/*'"],
                           user="1000")
    assert code == 0 and f"u/{name}/find-stars" in out.decode(), out.decode()
    hub.stop(name)


def wait_check(hub, job_id, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = course_api(hub, "GET", f"checks/{job_id}").json()
        if job["done"]:
            return job
        time.sleep(2)
    raise AssertionError(f"check {job_id} not done in {timeout} s: {job}")


@pytest.fixture(scope="module")
def checked(hub, tmp_path_factory, two_tags):
    """A course whose one notebook passes on one tag and fails on the other, checked with the CLI."""
    wait_course_service(hub)
    (good, good_version), (bad, bad_version) = two_tags
    tmp_path = tmp_path_factory.mktemp("checked")
    name = f"tagcheck-{uuid.uuid4().hex[:6]}"
    version = publish_dir(hub, tmp_path, name, {"only.ipynb": notebook(
        "import lsst.daf.butler",
        "x = 1",
        f"assert lsst.daf.butler.__version__ == {good_version!r}, lsst.daf.butler.__version__",
    )})
    done = cli(hub, "check", name, "--tags", f"{good},{bad}")
    yield {"name": name, "version": version, "good": good, "bad": bad, "bad_version": bad_version, "cli": done,
           "tmp": tmp_path}
    course_api(hub, "DELETE", f"courses/{name}")


def test_the_check_finds_the_tag_a_notebook_fails_on_and_the_session_lock_warns(hub, checked):
    name, version, good, bad, bad_version = (checked[k] for k in ("name", "version", "good", "bad", "bad_version"))
    done = checked["cli"]
    # the CLI: progress while it runs, then the matrix; exit status 1 because one tag fails
    assert done.returncode == 1, done.stdout + done.stderr
    assert "running (0/1: only.ipynb)" in done.stdout
    assert f"{bad}: only.ipynb, cell 3: failed: AssertionError: {bad_version}" in done.stdout, done.stdout
    # the matrix the course page shows: exactly that cell, and the other tag passed
    r = course_api(hub, "GET", "courses")
    checks = next(c for c in r.json()["courses"] if c["course"] == name)["checks"]
    assert checks[good]["state"] == "passed"
    assert checks[bad]["state"] == "failed"
    assert [(n["notebook"], n["state"], n["cell"], n["error"]) for n in checks[bad]["notebooks"]] == [
        ("only.ipynb", "failed", 3, f"AssertionError: {bad_version}")]
    assert not check_containers(hub), "check containers left behind"
    # an admin locking a session to the failing tag is warned, with the cell
    url = f"{hub.url}{SESSIONS_API}/sessions/{name}"
    auth = {"Authorization": f"token {hub.token}"}
    r = requests.put(url, json={"tag": bad}, headers=auth, verify=hub.ca, timeout=30)
    try:
        assert r.status_code == 200, r.text
        mine = [w for w in r.json()["course_checks"] if w["course"] == name]
        assert [w["message"] for w in mine] == [f"{name} fails on {bad}: only.ipynb, cell 3: AssertionError: {bad_version}"]
        sessions = requests.get(f"{hub.url}{SESSIONS_API}/sessions", headers=auth, verify=hub.ca, timeout=30).json()
        row = next(s for s in sessions["sessions"] if s["name"] == name)
        assert any(w["course"] == name and w["state"] == "failed" for w in row["course_checks"])
        r = requests.put(url, json={"tag": good}, headers=auth, verify=hub.ca, timeout=30)
        assert not [w for w in r.json()["course_checks"] if w["course"] == name]
    finally:
        requests.delete(url, headers=auth, verify=hub.ca, timeout=30)


@pytest.mark.browser
def test_the_course_page_shows_the_matrix_and_the_sessions_page_warns(hub, checked):
    """Both pages in Chromium: the failing cell in the matrix, the warning when a session is opened."""
    name, good, bad = checked["name"], checked["good"], checked["bad"]
    try:
        with admin_browser(hub, "course-check-sessions-page.png") as (page, errors):
            page.goto(f"{hub.url}services/stackhub-courses/")
            table = page.locator(f"table.matrix[data-course='{name}']")
            table.wait_for()
            assert table.locator(f"td[data-notebook='only.ipynb'][data-tag='{bad}']").inner_text() == "failed (cell 3)"
            assert table.locator(f"td[data-notebook='only.ipynb'][data-tag='{good}']").inner_text() == "passed"
            assert f"{bad}, only.ipynb, cell 3: AssertionError" in page.inner_text("#matrices")
            page.goto(f"{hub.url}services/stackhub-sessions/")
            form = page.locator("#open-session")
            form.locator("input[name=name]").fill(name)
            form.locator("select[name=tag]").select_option(bad)
            form.get_by_role("button", name="Open session").click()
            page.locator("#message", has_text="but warning").wait_for()
            assert f"{name} fails on {bad}: only.ipynb, cell 3" in page.inner_text("#message")
            row = page.locator("#sessions tbody tr", has_text=name)
            assert f"{name} fails on {bad}" in row.inner_text()
            assert errors == []
    finally:
        requests.delete(f"{hub.url}{SESSIONS_API}/sessions/{name}", headers={"Authorization": f"token {hub.token}"},
                        verify=hub.ca, timeout=30)


def test_a_new_version_is_not_checked_and_the_old_results_stay_with_the_old_version(hub, checked):
    name, version, good, bad = (checked[k] for k in ("name", "version", "good", "bad"))
    (checked["tmp"] / "v2").mkdir()
    new = publish_dir(hub, checked["tmp"] / "v2", name, {"only.ipynb": notebook("import lsst.daf.butler", "y = 2")})
    assert new != version
    r = course_api(hub, "GET", "courses")
    checks = next(c for c in r.json()["courses"] if c["course"] == name)["checks"]
    assert {checks[good]["state"], checks[bad]["state"]} == {"not checked"}
    old = course_api(hub, "GET", f"courses/{name}/checks", params={"version": version}).json()
    assert old["checks"][bad]["state"] == "failed"


def test_a_hanging_notebook_is_cut_at_the_timeout_reported_and_nothing_is_left_running(hub, tmp_path, stack_tags):
    hub.reconfigure({"courses": {"checkTimeout": 15}})
    try:
        wait_course_service(hub)
        name = f"hang-{uuid.uuid4().hex[:6]}"
        publish_dir(hub, tmp_path, name, {
            "01-hang.ipynb": notebook("import time", "time.sleep(3600)", "print('never')"),
            "02-fine.ipynb": notebook("assert 1 + 1 == 2"),
        })
        t0 = time.monotonic()
        r = course_api(hub, "POST", "checks", json={"course": name, "tags": [stack_tags[0]]})
        assert r.status_code == 202, r.text
        job = wait_check(hub, r.json()["id"], timeout=300)
        seconds = time.monotonic() - t0
        result = job["tags"][0]
        assert result["state"] == "failed"
        assert [(n["notebook"], n["state"], n["cell"]) for n in result["notebooks"]] == [
            ("01-hang.ipynb", "timeout", 2), ("02-fine.ipynb", "passed", None)]
        assert "longer than 15 s" in result["notebooks"][0]["error"]
        assert seconds < 200, f"the hanging cell was not cut: the check took {seconds:.0f} s"
        assert not check_containers(hub), "a check container is still there"
        course_api(hub, "DELETE", f"courses/{name}")
    finally:
        hub.reconfigure()

