"""The stackhub-courses service with a fake hub login and fake servers: who may publish, what the
API answers for good and bad sources, and what "sync now" records."""

import io
import json
import tarfile

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from spawner.courses import CourseStore
from spawner.courses_service import Context, Seen, make_app
from spawner.hubservice import ServiceHandler

from .test_sessions_service import FakeAuth

PREFIX = "/services/stackhub-courses/"
TOKENS = {
    "admin-token": {"kind": "service", "name": "stackhub-admin", "scopes": ["access:services"]},
    "ivy-instructor": {"kind": "user", "name": "ivy", "scopes": ["access:services!service=stackhub-courses"]},
    "pat-plain": {"kind": "user", "name": "pat", "scopes": ["read:users:name!user=pat"]},
}


class CoursesAuth(FakeAuth):
    access_scopes = {"access:services!service=stackhub-courses"}
    cookie_name = "stackhub-courses"

    async def get_user(self, handler, sync=False):
        token = handler.request.headers.get("Authorization", "").removeprefix("token ")
        return dict(TOKENS[token]) if token in TOKENS else None


class FakeServers:
    def __init__(self):
        self.synced = []

    async def statuses(self):
        return {"ann": {"intro": {"version": "v1"}}}

    async def sync(self, users, courses):
        self.synced.append((users, courses))
        return {"ann": {"ok": True, "courses": {"intro": {"version": "v2", "counts": {"update": 1}}}},
                "bob": {"ok": False, "error": "container stopped"}}


def tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
async def service(tmp_path, monkeypatch):
    monkeypatch.setattr(ServiceHandler, "_hub_auth", CoursesAuth())
    (tmp_path / "courses").mkdir()
    from concurrent.futures import ThreadPoolExecutor

    ctx = Context(store=CourseStore(root=tmp_path / "courses"), servers=FakeServers(),
                  seen=Seen(tmp_path / "seen.json"), prefix=PREFIX, executor=ThreadPoolExecutor(2))
    sock, port = bind_unused_port()
    server = HTTPServer(make_app(ctx))
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)

    async def call(method, path, body=None, token="ivy-instructor", data=None, ctype="application/json"):
        headers = {"Content-Type": ctype, **({"Authorization": f"token {token}"} if token else {})}
        payload = data if data is not None else None if body is None else json.dumps(body).encode()
        try:
            r = await client.fetch(f"http://127.0.0.1:{port}{PREFIX}api/{path}", method=method, headers=headers,
                                   body=payload, allow_nonstandard_methods=True)
            return r.code, json.loads(r.body)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)
    yield call, ctx
    server.stop()
    client.close()


async def test_who_may_use_it(service):
    call, _ = service
    assert (await call("GET", "courses", token=None))[0] == 401
    code, body = await call("GET", "courses", token="pat-plain")
    assert code == 403 and "only members of the hub group 'instructors' and admins" in body["message"]
    code, body = await call("PUT", "courses/x", {"git": "https://example.org/x.git"}, token="pat-plain")
    assert code == 403
    assert (await call("GET", "courses", token="admin-token"))[0] == 200
    assert (await call("GET", "courses"))[0] == 200


async def test_publish_directory_list_counts_and_remove(service):
    call, ctx = service
    code, body = await call("PUT", "courses/intro?source=laptop", data=tar({"A.ipynb": b"A1"}), ctype="application/x-tar")
    assert code == 201 and body["files"] == 1 and body["publisher"] == "ivy" and body["source"]["location"] == "laptop"
    code, body = await call("GET", "courses")
    assert [c["course"] for c in body["courses"]] == ["intro"] and body["courses"][0]["users"] == {"v1": 1}
    code, body = await call("POST", "sync", {"courses": ["intro"]})
    assert code == 200 and body["synced"] == 1 and body["failed"] == ["bob"]
    assert ctx.servers.synced == [(None, ["intro"])] and ctx.seen.counts("intro") == {"v2": 1}
    assert (await call("DELETE", "courses/intro"))[0] == 200
    assert (await call("DELETE", "courses/intro"))[0] == 404


@pytest.mark.parametrize("path,kw,status,needle", [
    ("courses/a%2Fb", {"body": {"git": "https://x.org/r.git"}}, 400, "must not contain '/'"),
    ("courses/..", {"body": {"git": "https://x.org/r.git"}}, 400, "must not contain '..'"),
    ("courses/", {"body": {"git": "https://x.org/r.git"}}, 400, "needs a name"),
    ("courses/x", {"body": {"git": "file:///srv/stackhub/secrets"}}, 400, "must be an https://"),
    ("courses/x", {"body": {"url": "https://x.org/r.git"}}, 400, "unknown keys: url"),
    ("courses/x", {"data": b"hello", "ctype": "text/plain"}, 415, "Content-Type text/plain"),
    ("courses/x", {"data": b"not a tar", "ctype": "application/x-tar"}, 400, "not a readable tar"),
    ("courses/x", {"data": b"not a bundle", "ctype": "application/x-git-bundle"}, 400, "cannot fetch the git repository"),
    ("sync", {"body": {"courses": [".."]}}, 400, "'..'"),
])
async def test_bad_requests_are_clear_and_publish_nothing(service, path, kw, status, needle):
    call, ctx = service
    method = "POST" if path == "sync" else "PUT"
    code, body = await call(method, path, **kw)
    assert code == status and needle in body["message"], body
    assert ctx.store.list() == [] and ctx.servers.synced == []
