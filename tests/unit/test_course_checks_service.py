"""The course service's check API with a fake engine runner: what it accepts, how many containers run
at once, what the page's data shows while and after a check, and "not checked" after a new version."""

import asyncio
import json
import threading
import time

import pytest

from spawner.core.catalog import Catalog, TagEntry
from spawner.core.config import StackhubConfig
from spawner.core.tags import parse_tag
from spawner.courses.checks import CheckStore
from spawner.courses.publish import CourseStore
from spawner.services.base import ServiceHandler
from spawner.services.course_checks import CheckJobs
from spawner.services.courses import Context, Seen

from .test_courses_service import PREFIX, CoursesAuth, FakeServers, served, tar

TAGS = ["w_2026_43", "w_2026_42", "v30_0_0"]


class FakeRunner:
    """Answers like the check program: ``w_2026_42`` fails cell 2 of b.ipynb; the rest pass."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.specs = []

    def run(self, spec, on_line):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.specs.append(spec)
        try:
            tag = spec.environment["STACKHUB_TAG"]
            on_line(json.dumps({"event": "begin", "total": 2}))
            for nb in ("a.ipynb", "b.ipynb"):
                on_line(json.dumps({"event": "start", "notebook": nb}))
                time.sleep(0.05)
                bad = tag == "w_2026_42" and nb == "b.ipynb"
                on_line(json.dumps({"event": "done", "notebook": nb, "state": "failed" if bad else "passed",
                                    "cell": 2 if bad else None, "error": "AssertionError: 30.2026.4200" if bad else None}))
            on_line(json.dumps({"event": "end"}))
            return {"exit_code": 0, "timed_out": False, "stderr": ""}
        finally:
            with self.lock:
                self.running -= 1


class FakeCatalogSource:
    async def get(self):
        return Catalog(tuple(TagEntry(parse_tag(t), image=f"stackhub/lsst-stack:{t}") for t in TAGS), "w_2026_43")


@pytest.fixture
async def service(tmp_path, monkeypatch):
    monkeypatch.setattr(ServiceHandler, "_hub_auth", CoursesAuth())
    (tmp_path / "courses").mkdir()
    from concurrent.futures import ThreadPoolExecutor

    cfg = StackhubConfig.model_validate({"courses": {"checkConcurrency": 2}})
    runner = FakeRunner()
    ctx = Context(store=CourseStore(root=tmp_path / "courses"), servers=FakeServers(),
                  seen=Seen(tmp_path / "seen.json"), prefix=PREFIX, executor=ThreadPoolExecutor(2),
                  checks=CheckJobs(cfg=cfg, runner=runner, store=CheckStore(tmp_path / "checks.json")),
                  catalog_source=FakeCatalogSource())
    async with served(ctx) as call:
        yield call, ctx, runner


async def publish(call, files):
    code, body = await call("PUT", "courses/intro", data=tar(files), ctype="application/x-tar")
    assert code == 201, body
    return body["version"]


async def wait_done(call, job_id, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, job = await call("GET", f"checks/{job_id}")
        if job["done"]:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the check did not finish")


@pytest.mark.parametrize("body, status, needle", [
    ({"course": "intro", "tags": ["w_2099_01"]}, 400, "unknown stack tag 'w_2099_01'; allowed: w_2026_43"),
    ({"course": "intro", "tags": []}, 400, "non-empty list"),
    ({"course": "intro", "tags": "w_2026_43"}, 400, "non-empty list"),
    ({"course": "nope"}, 404, "no published course 'nope'"),
    ({"course": "../x"}, 400, "must not contain '/'"),
    ({"course": "intro", "extra": 1}, 400, "unknown keys extra"),
    ({}, 400, '{"course"'),
])
async def test_bad_check_requests_are_refused_naming_what_is_allowed(service, body, status, needle):
    call, _, runner = service
    await publish(call, {"a.ipynb": b"{}"})
    code, reply = await call("POST", "checks", body)
    assert code == status and needle in reply["message"]
    assert runner.specs == []  # nothing ran


async def test_a_course_without_notebooks_is_not_checked(service):
    call, _, runner = service
    await publish(call, {"README.md": b"hi"})
    code, reply = await call("POST", "checks", {"course": "intro"})
    assert code == 400 and "has no notebooks" in reply["message"] and runner.specs == []


async def test_only_instructors_and_admins_may_check(service):
    call, _, _ = service
    await publish(call, {"a.ipynb": b"{}"})
    assert (await call("POST", "checks", {"course": "intro"}, token="pat-plain"))[0] == 403
    assert (await call("POST", "checks", {"course": "intro"}, token=None))[0] == 401


async def test_the_matrix_shows_the_failing_tag_and_cell_and_a_new_version_is_not_checked(service):
    call, ctx, runner = service
    version = await publish(call, {"a.ipynb": b"{}", "b.ipynb": b"{}"})
    code, job = await call("POST", "checks", {"course": "intro"})  # default: every tag
    assert code == 202 and [t["tag"] for t in job["tags"]] == TAGS and job["version"] == version
    job = await wait_done(call, job["id"])
    assert {t["tag"]: t["state"] for t in job["tags"]} == {"w_2026_43": "passed", "w_2026_42": "failed",
                                                          "v30_0_0": "passed"}
    assert runner.most == 2, "checkConcurrency 2: never more, and the tags did overlap"
    # what the course page shows
    code, data = await call("GET", "courses")
    checks = data["courses"][0]["checks"]
    assert data["tags"] == TAGS and list(checks) == TAGS
    bad = [n for n in checks["w_2026_42"]["notebooks"] if n["state"] != "passed"]
    assert bad == [{"notebook": "b.ipynb", "state": "failed", "cell": 2, "error": "AssertionError: 30.2026.4200",
                    "seconds": None}]
    code, kept = await call("GET", "courses/intro/checks")
    assert kept["version"] == version and kept["checks"]["w_2026_42"]["state"] == "failed"
    # a new version: every tag is "not checked" again; the old results stay under the old version
    new = await publish(call, {"a.ipynb": b"{}", "b.ipynb": b"{ }"})
    assert new != version
    code, data = await call("GET", "courses")
    assert {t: r["state"] for t, r in data["courses"][0]["checks"].items()} == {t: "not checked" for t in TAGS}
    code, old = await call("GET", f"courses/intro/checks?version={version}")
    assert old["checks"]["w_2026_43"]["state"] == "passed"


async def test_recommended_means_its_tag_and_a_tag_named_twice_runs_once(service):
    call, _, runner = service
    await publish(call, {"a.ipynb": b"{}"})
    code, job = await call("POST", "checks", {"course": "intro", "tags": ["recommended", "w_2026_43"]})
    assert code == 202 and [t["tag"] for t in job["tags"]] == ["w_2026_43"]
    await wait_done(call, job["id"])
    assert [s.image for s in runner.specs] == ["stackhub/lsst-stack:w_2026_43"]
