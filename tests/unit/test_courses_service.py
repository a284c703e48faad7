"""The stackhub-courses service with a fake hub login and fake servers: who may publish, what the
API answers for good and bad sources, and what "sync now" records."""

import contextlib
import io
import json
import logging
import tarfile

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from spawner.courses.publish import CourseStore
from spawner.services.courses import Context, Seen, make_app
from spawner.services.base import ServiceHandler

from .test_sessions_service import FakeAuth

PREFIX = "/services/stackhub-courses/"


@contextlib.asynccontextmanager
async def served(ctx):
    """The course service of ``ctx`` on a free port; yields ``call(method, path, ...) -> (code, json)``."""
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
    try:
        yield call
    finally:
        server.stop()
        client.close()
TOKENS = {
    "admin-token": {"kind": "service", "name": "stackhub-admin", "scopes": ["access:services"]},
    "ivy-instructor": {"kind": "user", "name": "ivy", "scopes": ["access:services!service=stackhub-courses"]},
    "pat-plain": {"kind": "user", "name": "pat", "scopes": ["read:users:name!user=pat"]},
    "kim-instructor": {"kind": "user", "name": "kim", "scopes": ["access:services!service=stackhub-courses"]},
    "ada-admin": {"kind": "user", "name": "ada", "admin": True, "scopes": ["access:services"]},
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
    async with served(ctx) as call:
        yield call, ctx


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
    assert ctx.store.current("intro") is not None and (ctx.store.root / "intro").is_dir()
    assert (await call("DELETE", "courses/intro"))[0] == 200
    # unpublished: gone from the store (and its versions from the volume), the list and the API
    assert ctx.store.list() == [] and ctx.store.current("intro") is None
    assert not (ctx.store.root / "intro").exists()
    assert (await call("GET", "courses"))[1]["courses"] == []
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


# --- what containers say is checked; what is stored stays readable -------------------------------


class LyingServers(FakeServers):
    async def statuses(self):
        from spawner.courses.records import parse_status

        courses, _ = parse_status(json.dumps({"intro": {"version": ["not", "a", "string"]},
                                              "other": {"version": "v3"}}).encode())
        return {"mallory": courses}

    async def sync(self, users, courses):
        return {"mallory": {"ok": True, "courses": {"intro": {"version": {"$": 1}}, "other": {"version": "v4"}}}}


async def test_a_wrong_typed_status_is_not_stored_and_courses_still_answer(service, caplog):
    call, ctx = service
    ctx.servers = LyingServers()
    assert (await call("PUT", "courses/intro", data=tar({"A.ipynb": b"A1"}), ctype="application/x-tar"))[0] == 201
    code, body = await call("GET", "users?refresh=1")
    assert code == 200 and body["users"] == {"mallory": {"other": {"version": "v3", "synced": None}}}
    code, body = await call("POST", "sync", {})
    assert code == 200 and "intro: version: Input should be a valid string; dropped" in caplog.text
    stored = json.loads(ctx.seen.path.read_text())
    assert stored == {"mallory": {"other": {"version": "v4", "synced": None}}}
    assert (await call("GET", "courses"))[0] == 200


@pytest.mark.parametrize("content", [b'{"ann": {"intro": {"version": ["x"]}}}', b"{broken", b"[]", b"\xff"])
def test_a_corrupt_seen_file_is_set_aside_and_the_service_goes_on(tmp_path, content, caplog):
    path = tmp_path / "courses-seen.json"
    path.write_bytes(content)
    seen = Seen(path)
    assert seen.data == {} and seen.counts("intro") == {}
    assert (tmp_path / "courses-seen.json.bad").read_bytes() == content and caplog.records
    seen.update("bob", {"intro": {"version": "v1"}})
    seen.save()
    assert Seen(path).data == {"bob": {"intro": {"version": "v1", "synced": None}}}


async def test_an_upload_described_by_a_url_with_a_token_stores_no_token(service, caplog):
    caplog.set_level(logging.INFO)
    call, ctx = service
    code, body = await call("PUT", "courses/intro?source=https%3A%2F%2Foauth2%3AglpatSECRET%40gitlab.example.org%2Fx.git",
                            data=tar({"A.ipynb": b"A1"}), ctype="application/x-tar")
    assert code == 201 and body["source"]["location"] == "https://gitlab.example.org/x.git"
    for p in ctx.store.root.rglob("*"):
        assert p.is_dir() or b"SECRET" not in p.read_bytes(), p
    assert "SECRET" not in caplog.text


async def test_a_git_url_with_a_token_is_refused_without_showing_it(service, caplog):
    caplog.set_level(logging.INFO)
    call, ctx = service
    code, body = await call("PUT", "courses/intro", {"git": "https://oauth2:glpatSECRET@169.254.169.254/x.git"})
    assert code == 400 and "169.254.169.254 is a link-local address" in body["message"]
    assert "SECRET" not in body["message"] and "SECRET" not in caplog.text


def test_the_access_log_line_has_no_credentials(caplog):
    from types import SimpleNamespace

    caplog.set_level(logging.INFO)
    from spawner.services.courses import log_request

    request = SimpleNamespace(method="PUT", uri="/x?source=https%3A%2F%2Fu%3ASECRET%40h", path="/x",
                              remote_ip="1.2.3.4", request_time=lambda: 0.01)
    log_request(SimpleNamespace(get_status=lambda: 201, request=request))
    assert "201 PUT /x" in caplog.text and "SECRET" not in caplog.text


# --- the Docker calls, as data ------------------------------------------------------------------


def test_status_is_read_as_a_bounded_regular_file_under_a_time_limit():
    from spawner.courses.records import STATUS_MAX_BYTES
    from spawner.services.courses import status_command

    cmd = status_command(7)
    assert cmd[:4] == ["timeout", "-s", "KILL", "7"]
    script = cmd[-1]
    assert '[ -f "$f" ] && [ ! -L "$f" ]' in script and f"head -c {STATUS_MAX_BYTES + 1}" in script


@pytest.mark.parametrize("kind,network", [("git", "bridge"), ("bundle", "none"), ("directory", "none")])
def test_the_fetch_container_is_unprivileged_without_socket_and_network_only_for_git(kind, network):
    from spawner.services.courses import fetch_container

    spec = fetch_container("stackhub/hub:x", {"kind": kind}, network="bridge", lifetime=90)
    assert spec["user"] == "65534:65534" and spec["cap_drop"] == ["ALL"]
    assert spec["security_opt"] == ["no-new-privileges"] and spec["network_mode"] == network
    assert "volumes" not in spec and "mounts" not in spec and spec["auto_remove"]
    assert spec["entrypoint"] == ["sleep"] and spec["command"] == ["90"]


async def test_error_log_lines_name_the_request_without_its_query(service, caplog):
    caplog.set_level(logging.INFO)
    call, ctx = service
    code, _ = await call("PUT", "courses/x?source=https%3A%2F%2Fu%3AglpatSECRET%40h%2Fx.git", data=b"not a tar",
                         ctype="application/x-tar")
    assert code == 400 and "PUT /services/stackhub-courses/api/courses/x" in caplog.text
    assert "SECRET" not in caplog.text


def test_fetch_containers_run_the_hubs_own_image_by_id_not_a_tag_a_rebuild_may_move():
    from types import SimpleNamespace

    from spawner.backends.docker.engine import DockerEngine
    from spawner.core.config import StackhubConfig

    def missing(_):
        raise LookupError

    def own_image(client, fallback):
        return DockerEngine(StackhubConfig(), client=client).own_image(fallback)

    inside = SimpleNamespace(containers=SimpleNamespace(get=lambda _: SimpleNamespace(image=SimpleNamespace(id="sha256:own"))))
    assert own_image(inside, "stackhub/hub:0.1.0") == "sha256:own"
    outside = SimpleNamespace(containers=SimpleNamespace(get=missing),
                              images=SimpleNamespace(get=lambda ref: SimpleNamespace(id=f"sha256:{ref}")))
    assert own_image(outside, "hub:x") == "sha256:hub:x"
    nothing = SimpleNamespace(containers=SimpleNamespace(get=missing), images=SimpleNamespace(get=missing))
    assert own_image(nothing, "hub:x") == "hub:x"


async def test_an_instructor_changes_only_their_own_courses_or_those_shared_with_them(service):
    call, ctx = service
    upload = {"data": tar({"A.ipynb": b"A1"}), "ctype": "application/x-tar"}
    assert (await call("PUT", "courses/intro", **upload))[0] == 201  # ivy's
    assert (await call("GET", "courses/intro/owners"))[1] == {"owner": "ivy", "shared": []}
    listed = (await call("GET", "courses"))[1]["courses"]
    assert listed[0]["owners"] == {"owner": "ivy", "shared": []}

    # kim may neither replace nor remove ivy's course, nor share it with herself; nothing changes
    version = ctx.store.current("intro")["version"]
    code, body = await call("PUT", "courses/intro", token="kim-instructor", data=tar({"A.ipynb": b"evil"}),
                            ctype="application/x-tar")
    assert code == 403 and "belongs to ivy" in body["message"]
    assert (await call("DELETE", "courses/intro", token="kim-instructor"))[0] == 403
    assert (await call("PUT", "courses/intro/owners", {"shared": ["kim"]}, token="kim-instructor"))[0] == 403
    assert ctx.store.current("intro")["version"] == version

    # shared with her by ivy, she may publish it, but not share it on or take it over
    assert (await call("PUT", "courses/intro/owners", {"shared": ["kim"]}))[1] == {"owner": "ivy", "shared": ["kim"]}
    assert (await call("PUT", "courses/intro", token="kim-instructor", data=tar({"A.ipynb": b"A2"}),
                       ctype="application/x-tar"))[0] == 201
    assert (await call("PUT", "courses/intro/owners", {"shared": ["kim", "pat"]}, token="kim-instructor"))[0] == 403
    assert (await call("PUT", "courses/intro/owners", {"owner": "ivy", "shared": ["ivy"]}))[1] == {
        "owner": "ivy", "shared": []}  # the owner is not listed again among those it is shared with
    code, body = await call("PUT", "courses/intro/owners", {"owner": "kim", "shared": []})
    assert code == 403 and "only admins" in body["message"]
    code, body = await call("PUT", "courses/intro/owners", {"shared": ["kim\n"]})
    assert code == 400 and "not a user name" in body["message"]

    # an admin changes any course: gives it to kim, then removes it
    assert (await call("PUT", "courses/intro/owners", {"owner": "kim"}, token="ada-admin"))[1]["owner"] == "kim"
    assert (await call("PUT", "courses/intro", **upload))[0] == 403  # ivy's no more
    assert (await call("DELETE", "courses/intro", token="ada-admin"))[0] == 200
    assert ctx.store.current("intro") is None


async def test_a_course_from_before_owners_belongs_to_its_first_publisher(service):
    call, ctx = service
    assert (await call("PUT", "courses/old", data=tar({"A.ipynb": b"A1"}), ctype="application/x-tar"))[0] == 201
    (ctx.store.root / "old" / "owners.json").unlink()
    assert (await call("GET", "courses/old/owners"))[1] == {"owner": "ivy", "shared": []}
    assert (await call("DELETE", "courses/old", token="kim-instructor"))[0] == 403
    (ctx.store.root / "old" / "owners.json").write_text('{"owner": 5}')  # damaged: left to admins
    assert (await call("DELETE", "courses/old"))[0] == 403
    assert (await call("DELETE", "courses/old", token="admin-token"))[0] == 200


@pytest.mark.parametrize("name", ["intro%0A", "intro%0a"])
async def test_names_are_checked_whole_not_up_to_a_newline(service, name):
    call, _ = service
    code, body = await call("PUT", f"courses/{name}", data=tar({"A.ipynb": b"A1"}), ctype="application/x-tar")
    assert code == 400 and "not allowed" in body["message"], body
