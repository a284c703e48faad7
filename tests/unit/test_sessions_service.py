"""The stackhub-sessions service against a fake hub: who may call it, what it changes and logs,
and pre-warm jobs (bounded concurrency, progress, failures kept per user)."""

import asyncio
import json

import pytest
from jupyterhub.services.auth import check_scopes
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from spawner.core.config import StackhubConfig
from spawner.services.hubapi import HubError
from spawner.services.jobs import Jobs
from spawner.hub.policy_store import HubPolicy, PolicyStore
from spawner.services.base import ServiceHandler
from spawner.services.sessions import Context, make_app

PREFIX = "/services/stackhub-sessions/"
TOKENS = {
    "admin-token": {"kind": "service", "name": "stackhub-admin",
                    "scopes": ["admin:users", "admin:servers", "access:services"]},
    "ann-admin": {"kind": "user", "name": "ann", "admin": True, "scopes": ["access:services"]},
    "bob-user": {"kind": "user", "name": "bob", "admin": False,
                 "scopes": ["access:services!service=stackhub-sessions"]},
    "carl-no-access": {"kind": "user", "name": "carl", "admin": False, "scopes": ["read:users:name!user=carl"]},
}


class FakeAuth:
    access_scopes = {"access:services!service=stackhub-sessions"}
    cookie_name = "stackhub-sessions"
    base_url = "/"

    async def get_user(self, handler, sync=False):
        token = handler.request.headers.get("Authorization", "").removeprefix("token ")
        return dict(TOKENS[token]) if token in TOKENS else None

    def check_scopes(self, required, model):
        return check_scopes(required, set(model["scopes"]))


class FakeHub:
    """The part of HubAPI the service uses; servers become ready after ``delay`` seconds."""

    def __init__(self, delay=0.05):
        self.delay = delay
        self.users_ = {n: {"name": n, "admin": False, "groups": ["dm"] if n.startswith("dm") else [], "servers": {}}
                       for n in ("dm1", "dm2", "dm3", "dm4", "dm5", "zed")}
        self.starting = 0
        self.most_at_once = 0
        self.refuse = {}

    async def user(self, name):
        return self.users_.get(name)

    async def users(self):
        return list(self.users_.values())

    async def group(self, name):
        if name != "dm":
            return None
        return {"name": "dm", "users": [n for n, u in self.users_.items() if "dm" in u["groups"]]}

    async def groups(self):
        return [await self.group("dm")]

    async def start(self, name, options):
        if name in self.refuse:
            raise HubError(400, self.refuse[name])
        if "" in self.users_[name]["servers"]:
            raise HubError(400, f"{name} is already running")
        self.starting += 1
        self.most_at_once = max(self.most_at_once, self.starting)
        self.users_[name]["servers"][""] = {"ready": False, "user_options": options}
        return 202

    async def stop(self, name):
        if "" not in self.users_[name]["servers"]:
            raise HubError(400, f"{name}'s server is not running")
        del self.users_[name]["servers"][""]
        return 204

    async def wait(self, name, *, ready, timeout):
        await asyncio.sleep(self.delay)
        if ready:
            self.users_[name]["servers"][""]["ready"] = True
            self.starting -= 1
        return {}


class FakeCatalog:
    def __init__(self, catalog):
        self.catalog = catalog

    async def get(self):
        return self.catalog


@pytest.fixture
async def service(tmp_path, catalog, monkeypatch):
    monkeypatch.setattr(ServiceHandler, "_hub_auth", FakeAuth())
    hub = FakeHub()
    ctx = Context(cfg=StackhubConfig(), store=PolicyStore(tmp_path), catalog=FakeCatalog(catalog), hub=hub,
                  jobs=Jobs(hub, timeout=5), prefix=PREFIX, concurrency=2)
    sock, port = bind_unused_port()
    server = HTTPServer(make_app(ctx))
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)

    async def call(method, path, body=None, token="admin-token"):
        headers = {"Authorization": f"token {token}"} if token else {}
        try:
            r = await client.fetch(f"http://127.0.0.1:{port}{PREFIX}api/{path}", method=method, headers=headers,
                                   body=None if body is None else json.dumps(body), allow_nonstandard_methods=True)
            return r.code, json.loads(r.body)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)

    call.ctx, call.hub, call.port = ctx, hub, port
    yield call
    server.stop()
    client.close()


async def finished(service, job, timeout=10):
    """Poll the job until it is done, or fail after ``timeout`` seconds showing where it stuck."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not job["done"]:
        assert asyncio.get_running_loop().time() < deadline, f"job not done within {timeout}s: {job}"
        await asyncio.sleep(0.02)
        job = (await service("GET", f"jobs/{job['id']}"))[1]
    return job


@pytest.mark.parametrize("token,status", [("bob-user", 403), ("carl-no-access", 403), (None, 401), ("bogus", 401)])
async def test_only_admins_may_call_the_api(service, token, status):
    for method, path, body in [("GET", "tags", None), ("PUT", "tags/w_2026_42", {"hidden": True}),
                               ("POST", "jobs", {"action": "stop", "group": "dm"})]:
        code, data = await service(method, path, body, token=token)
        assert code == status, (method, path, data)
    assert service.ctx.store.load().hidden == frozenset()


async def test_hide_recommend_and_the_audit_names_who(service):
    code, data = await service("PUT", "tags/w_2026_42", {"hidden": True}, token="ann-admin")
    assert code == 200 and data["hidden"] == ["w_2026_42"]
    code, data = await service("PUT", "tags/w_2026_43", {"hidden": True})
    assert code == 409 and "recommend another" in data["message"]
    code, data = await service("PUT", "recommended", {"tag": "v30_0_0"})
    assert code == 200 and data["recommended"] == "v30_0_0"
    assert [t["name"] for t in data["tags"] if t["recommended"]] == ["v30_0_0"]
    code, data = await service("GET", "audit")
    assert [(a["who"], a["action"]) for a in data["audit"]] == [
        ("service:stackhub-admin", "tags.recommend"), ("ann", "tags.hide")]


async def test_open_change_and_close_a_session(service):
    code, data = await service("PUT", "sessions/DM%20tutorial%202026-12", {"tag": "w_2026_41", "group": "dm"})
    assert code == 200 and data["status"] == "active" and data["opened_by"] == "service:stackhub-admin"
    code, data = await service("PUT", "sessions/DM%20tutorial%202026-12",
                               {"tag": "w_2026_42", "group": "dm", "start": "2099-01-01T09:00:00Z"})
    assert code == 200 and data["status"] == "scheduled"
    code, data = await service("GET", "sessions")
    assert [(s["name"], s["tag"]) for s in data["sessions"]] == [("DM tutorial 2026-12", "w_2026_42")]
    for body, needle in [({"tag": "w_1999_01"}, "no stack image"), ({"tag": "w_2026_41", "group": "nope"}, "no hub group"),
                         ({"tag": "w_2026_41", "start": "soon"}, "ISO 8601"), ({"tag": "w_2026_41", "x": 1}, "unknown keys")]:
        code, data = await service("PUT", "sessions/other", body)
        assert code == 400 and needle in data["message"], data
    assert (await service("DELETE", "sessions/DM%20tutorial%202026-12"))[0] == 200
    code, data = await service("DELETE", "sessions/DM%20tutorial%202026-12")
    assert code == 400 and "no session" in data["message"]
    actions = [a["action"] for a in (await service("GET", "audit"))[1]["audit"]]
    assert actions == ["session.close", "session.update", "session.open"]


async def test_prewarm_a_group_with_bounded_concurrency_then_stop_all(service):
    code, job = await service("POST", "jobs", {"action": "start", "group": "dm", "tag": "w_2026_41", "size": "small"})
    assert code == 202 and job["total"] == 5 and job["concurrency"] == 2
    job = await finished(service, job)
    assert job["counts"] == {"ready": 5}
    assert service.hub.most_at_once == 2
    assert service.hub.users_["dm3"]["servers"][""]["user_options"] == {"image_tag": "w_2026_41", "size": "small"}
    assert "" not in service.hub.users_["zed"]["servers"]
    code, job = await service("POST", "jobs", {"action": "stop", "group": "dm", "concurrency": 5})
    job = await finished(service, job)
    assert job["counts"] == {"stopped": 5}
    assert (await service("GET", "audit"))[1]["audit"][0]["action"] == "prewarm.stop"


async def test_start_one_user_and_bad_jobs(service):
    code, job = await service("POST", "jobs", {"action": "start", "user": "zed", "tag": "v30_0_0"})
    assert code == 202 and [u["user"] for u in job["users"]] == ["zed"]
    for body, status, needle in [
        ({"action": "start", "user": "nobody", "tag": "v30_0_0"}, 404, "no hub user"),
        ({"action": "start", "group": "nope", "tag": "v30_0_0"}, 404, "no hub group"),
        ({"action": "start", "user": "zed"}, 400, "needs a tag"),
        ({"action": "start", "user": "zed", "group": "dm", "tag": "x"}, 400, "exactly one"),
        ({"action": "launch", "user": "zed"}, 400, "action"),
    ]:
        code, data = await service("POST", "jobs", body)
        assert code == status and needle in data["message"], data


class PolicyHub(FakeHub):
    """A fake hub whose start checks user_options the way the spawner does: the real stored policy
    (``HubPolicy`` over the service's own ``PolicyStore``) and the real ``validate_options``."""

    def __init__(self, store, catalog):
        super().__init__(delay=0)
        self.users_["ann"] = {"name": "ann", "admin": True, "groups": [], "servers": {}}
        self.policy, self.catalog = HubPolicy(store), catalog

    async def start(self, name, options):
        from types import SimpleNamespace

        from spawner.core.options import OptionsError, validate_options

        model = self.users_[name]
        if "" in model["servers"]:  # the hub answers this before the spawner sees the options
            raise HubError(400, f"{name} is already running")
        user = SimpleNamespace(name=name, admin=model["admin"], groups=[SimpleNamespace(name=g) for g in model["groups"]])
        cfg = StackhubConfig()
        try:
            validate_options(options, self.catalog, cfg.sizes, default_size=cfg.stack.default_size,
                             restriction=await self.policy.restriction_for(user))
        except OptionsError as e:
            raise HubError(400, str(e)) from None
        return await super().start(name, options)


@pytest.fixture
async def policy_service(service, catalog):
    hub = PolicyHub(service.ctx.store, catalog)
    service.ctx.hub = service.hub = hub
    service.ctx.jobs = Jobs(hub, timeout=5)
    return service


async def test_admin_starts_and_prewarm_obey_the_real_policy_and_a_refused_user_fails_alone(policy_service):
    service = policy_service
    assert (await service("PUT", "tags/w_2026_42", {"hidden": True}))[0] == 200
    assert (await service("PUT", "sessions/DM", {"tag": "w_2026_41", "group": "dm"}))[0] == 200
    service.hub.users_["dm3"]["servers"][""] = {"ready": True}

    async def run(body):
        code, job = await service("POST", "jobs", body)
        assert code == 202, job
        job = await finished(service, job)
        return {r["user"]: (r["state"], r["message"]) for r in job["users"]}

    # the group is locked: another tag fails for each member, the running one is left alone
    states = await run({"action": "start", "group": "dm", "tag": "v30_0_0"})
    lock = "session 'DM': only image_tag 'w_2026_41' may be started, not 'v30_0_0'"
    assert states.pop("dm3")[0] == "running"
    assert states == {u: ("failed", lock) for u in ("dm1", "dm2", "dm4", "dm5")}
    # a hidden tag is refused for a user outside the session, not for an admin
    states = await run({"action": "start", "user": "zed", "tag": "w_2026_42"})
    assert states["zed"][0] == "failed" and "'w_2026_42' is not offered (hidden by an admin)" in states["zed"][1]
    assert (await run({"action": "start", "user": "ann", "tag": "w_2026_42"}))["ann"][0] == "ready"
    # what the policy allows starts: the session's tag for the group (even one hidden), an offered tag for zed
    assert (await run({"action": "start", "user": "zed", "tag": "v30_0_0"}))["zed"][0] == "ready"
    states = await run({"action": "start", "group": "dm", "tag": "w_2026_41"})
    assert states == {"dm1": ("ready", ""), "dm2": ("ready", ""), "dm4": ("ready", ""), "dm5": ("ready", ""),
                      "dm3": ("running", "was already running (stop it first to change its tag)")}
    assert service.hub.users_["dm1"]["servers"][""]["user_options"] == {"image_tag": "w_2026_41"}
    # closing the session lifts the lock
    assert (await service("DELETE", "sessions/DM"))[0] == 200
    service.hub.users_["dm1"]["servers"].clear()
    assert (await run({"action": "start", "user": "dm1", "tag": "v30_0_0"}))["dm1"][0] == "ready"


async def test_the_job_list_keeps_the_last_50(service):
    ids = []
    for _ in range(55):
        code, job = await service("POST", "jobs", {"action": "stop", "user": "zed"})
        assert code == 202
        ids.append((await finished(service, job))["id"])
    listed = [j["id"] for j in (await service("GET", "jobs"))[1]["jobs"]]
    assert listed == ids[-50:]
    assert (await service("GET", f"jobs/{ids[4]}"))[0] == 404 and (await service("GET", f"jobs/{ids[5]}"))[0] == 200


async def test_a_running_job_is_never_dropped_from_the_list(service):
    service.hub.delay = 0.5
    code, slow = await service("POST", "jobs", {"action": "start", "user": "zed", "tag": "v30_0_0"})
    service.ctx.jobs.keep = 2
    for _ in range(3):
        await finished(service, (await service("POST", "jobs", {"action": "stop", "user": "dm1"}))[1])
    listed = [j["id"] for j in (await service("GET", "jobs"))[1]["jobs"]]
    assert slow["id"] in listed and len(listed) == 2
    assert (await finished(service, slow))["counts"] == {"ready": 1}


def test_cli_follow_prints_a_line_per_change_and_fails_on_a_failure():
    from spawner.cli.sessions import follow

    def snap(states, done=False):
        return {"id": "1", "action": "start", "group": "dm", "total": 2, "done": done, "seconds": 3.0,
                "counts": {s: list(states.values()).count(s) for s in set(states.values())},
                "users": [{"user": u, "state": s, "message": "refused" if s == "failed" else "", "seconds": 1.5}
                          for u, s in states.items()]}
    later = iter([snap({"a": "ready", "b": "starting"}), snap({"a": "ready", "b": "failed"}, done=True)])
    lines = []
    rc = follow(lambda method, path: next(later), snap({"a": "starting", "b": "queued"}), out=lines.append, poll=0)
    assert lines == ["[0/2] a: starting", "[0/2] b: queued", "[1/2] a: ready (1.5s)", "[1/2] b: starting",
                     "[2/2] b: failed (1.5s): refused", "start group dm: 1 failed, 1 ready in 3.0s"]
    assert rc == 1


@pytest.mark.parametrize("zone,offset", [("America/Chicago", "-06:00"), ("Asia/Kolkata", "+05:30"), ("UTC", "+00:00")])
def test_cli_times_without_offset_are_local(monkeypatch, zone, offset):
    """A time typed without an offset is the CLI machine's local time: outside UTC a naive time
    taken as UTC (or dropped offsets) gives another instant, so the zone is set here, not assumed."""
    import time

    from spawner.cli.sessions import local_iso
    from spawner.core.policy import parse_time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert local_iso("2026-12-01T09:00") == f"2026-12-01T09:00:00{offset}"
        # what the service stores (UTC) is the same instant
        assert parse_time(local_iso("2026-12-01T09:00")) == parse_time(f"2026-12-01T09:00:00{offset}")
        # an explicit offset or Z is kept, whatever the local zone
        assert local_iso("2026-12-01T09:00+01:00") == "2026-12-01T09:00:00+01:00"
        assert local_iso("2026-12-01T09:00Z") == "2026-12-01T09:00:00+00:00"
        assert local_iso(None) is None
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_corrupt_policy_shows_on_the_page_and_api_and_the_lock_holds(service, tmp_path):
    ok_state = (await service("GET", "policy"))[1]
    assert ok_state["ok"] and ok_state["source"] == "absent"
    code, _ = await service("PUT", "sessions/tut", {"tag": "w_2026_41", "group": "dm"})
    assert code == 200
    (tmp_path / "policy.json").unlink()
    (tmp_path / "policy.json").write_text('{"sessions": 42}')
    code, state = await service("GET", "policy")
    assert code == 200 and not state["ok"] and state["source"] == "last-good"
    assert "sessions must be a list" in state["problem"] and str(tmp_path / "policy.json") in state["problem"]
    # what the page and the API show is what is enforced: the last good policy
    assert [s["name"] for s in (await service("GET", "sessions"))[1]["sessions"]] == ["tut"]
    client = AsyncHTTPClient(force_instance=True)
    port = service.port
    page = (await client.fetch(f"http://127.0.0.1:{port}{PREFIX}", headers={"Authorization": "token admin-token"})).body.decode()
    client.close()
    assert "The session policy file is unusable" in page and "sessions must be a list" in page
    assert 'id="policy-problem" role="alert" hidden' not in page
    # repair puts the last good policy back and keeps the bad file
    code, state = await service("POST", "policy/repair", {"empty": False})
    assert code == 200 and state["ok"], state
    assert (tmp_path / "policy.json.rejected").read_text() == '{"sessions": 42}'
    assert (await service("GET", "audit?limit=1"))[1]["audit"][0]["action"] == "policy.repair"


async def test_with_no_last_good_policy_reads_and_changes_answer_503_until_repaired(service, tmp_path):
    (tmp_path / "policy.json").write_text("{")
    for method, path, body in [("GET", "sessions", None), ("GET", "tags", None),
                               ("PUT", "tags/w_2026_42", {"hidden": True})]:
        code, data = await service(method, path, body)
        assert code == 503 and "the session policy is unreadable" in data["message"], (path, data)
    assert (await service("POST", "policy/repair", {"empty": False}))[0] == 409
    assert (await service("POST", "policy/repair", {"empty": "yes"}))[0] == 400
    code, state = await service("POST", "policy/repair", {"empty": True})
    assert code == 200 and state["ok"]
    assert (await service("GET", "sessions"))[0] == 200


def test_cli_session_status_and_repair(monkeypatch, capsys):
    import argparse

    from spawner.cli import sessions as cli_sessions

    calls = []
    bad = {"ok": False, "source": "last-good", "problem": "/s/policy.json: not valid JSON", "file": "/s/policy.json",
           "enforcing": "enforcing the last good policy"}

    def api(method, path, body=None):
        calls.append((method, path, body))
        return bad if method == "GET" else {**bad, "ok": True, "problem": None, "enforcing": "enforcing policy.json"}

    monkeypatch.setattr(cli_sessions, "client", lambda: api)
    assert cli_sessions.cmd_session(argparse.Namespace(session_command="status")) == 1
    assert "UNUSABLE: /s/policy.json: not valid JSON" in capsys.readouterr().out
    assert cli_sessions.cmd_session(argparse.Namespace(session_command="repair", empty=False)) == 0
    assert "the last good policy is restored" in capsys.readouterr().out
    assert calls[-1] == ("POST", "policy/repair", {"empty": False})


async def test_locking_a_session_to_a_tag_a_course_fails_on_warns_with_the_cell(service, tmp_path):
    """The course x tag checks (kept by stackhub-courses) reach the sessions page: a session locked to a
    tag the current version of a course failed on carries the warning; a passing tag does not."""
    from spawner.courses.checks import CheckStore
    from spawner.courses.sync import write_json

    root = tmp_path / "published"
    write_json(root / "intro" / "current.json", {"version": "v2", "files": {"a.ipynb": "x"}})
    store = CheckStore(tmp_path / "checks.json")
    store.put("intro", "v2", {"tag": "w_2026_42", "state": "failed", "notebooks": [
        {"notebook": "a.ipynb", "state": "failed", "cell": 3, "error": "AssertionError: 30.2026.4200"}]})
    store.put("intro", "v2", {"tag": "w_2026_43", "state": "passed", "notebooks": []})
    service.ctx.checks, service.ctx.courses_root = store, root
    code, data = await service("PUT", "sessions/day1", {"tag": "w_2026_42"})
    assert code == 200
    assert [w["message"] for w in data["course_checks"]] == [
        "intro fails on w_2026_42: a.ipynb, cell 3: AssertionError: 30.2026.4200"]
    code, data = await service("GET", "sessions")
    assert data["sessions"][0]["course_checks"][0]["state"] == "failed"
    code, data = await service("PUT", "sessions/day1", {"tag": "w_2026_43"})
    assert code == 200 and data["course_checks"] == []
    code, data = await service("PUT", "sessions/day1", {"tag": "v30_0_0"})
    assert [w["state"] for w in data["course_checks"]] == ["not checked"]
