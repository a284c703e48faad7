"""``stackhub-courses``: the instructors' page and REST API for publishing courses.

A hub-managed JupyterHub service (``python -m spawner.courses_service``) at
``/services/stackhub-courses/``. Who may use it: members of the hub group ``instructors`` and
admins (the hub grants them ``access:services!service=stackhub-courses``), logged in through the
hub's OAuth or with an API token (the ``stackhub course`` CLI sends one). Anyone else gets 403.

REST API (JSON; under ``/services/stackhub-courses/api``)::

    GET    courses             published courses, their version and how many users have which version
    PUT    courses/<name>      publish: JSON {"git": URL, "ref"?, "restore"?}, or an upload with
                               Content-Type application/x-git-bundle (?ref=) or application/x-tar
                               (a directory), with ?restore=1 and ?source=<description>
    DELETE courses/<name>      unpublish (users' copies stay in their homes)
    POST   sync                {"users"?: [...], "courses"?: [...]}: sync now in running servers
    GET    users               the version of each course each user was last seen with

The files live in the courses volume (``courses.CourseStore``); users' containers mount it
read-only and run ``stackhub-course-sync`` (``coursesync``), which this service installs there on
start and runs through ``docker exec`` for "sync now".
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tornado import web

from . import names
from .coursesync import STATE_DIR, STATUS_FILE, TOOL_NAME, TOOLS_DIR, read_json, write_json
from .courses import CourseError, CourseStore, Source, validate_name
from .hubservice import ServiceHandler, routes, serve

log = logging.getLogger("stackhub.courses")
SERVICE_NAME = "stackhub-courses"
UPLOAD_TYPES = {"application/x-git-bundle": "bundle", "application/x-tar": "directory"}
STATUS_TTL = 10.0  # seconds the users' versions read from running servers are reused


# --- users' containers (docker) ------------------------------------------------------------------


class Servers:
    """Running user servers on the engine: read what each home has, run the sync in them."""

    def __init__(self, *, client, uid: int, mount_path: str, executor: ThreadPoolExecutor):
        self.client = client
        self.uid = uid
        self.tool = f"{mount_path}/{TOOLS_DIR}/{TOOL_NAME}"
        self.executor = executor

    def _running(self) -> dict[str, object]:
        """username -> one running container (all of a user's servers share the home)."""
        out = {}
        for c in self.client.containers.list(filters={"label": f"{names.LABEL_ROLE}=server", "status": "running"}):
            user = c.labels.get(names.LABEL_USER)
            if user and (user not in out or not c.labels.get(names.LABEL_SERVER)):
                out[user] = c
        return out

    def _exec_json(self, container, cmd: list[str]) -> dict:
        code, out = container.exec_run(cmd, user=str(self.uid), demux=True)
        stdout, stderr = out
        try:
            data = json.loads((stdout or b"{}").decode())
        except ValueError:
            data = {}
        if code and not data.get("error"):
            data = {"ok": False, "error": (stderr or stdout or b"").decode(errors="replace").strip()[-300:]
                    or f"exit status {code}"}
        return data

    def _status(self, container) -> dict:
        path = f'"$HOME/notebooks/{STATE_DIR}/{STATUS_FILE}"'
        data = self._exec_json(container, ["sh", "-c", f"cat {path} 2>/dev/null || echo '{{}}'"])
        return {k: v for k, v in data.items() if isinstance(v, dict)}

    def _sync(self, container, courses: list[str]) -> dict:
        return self._exec_json(container, [self.tool, "--json", *courses])

    async def _each(self, fn, users: list[str] | None, *args) -> dict[str, dict]:
        loop = asyncio.get_running_loop()
        running = await loop.run_in_executor(self.executor, self._running)
        chosen = {u: c for u, c in running.items() if users is None or u in users}

        async def one(c):
            try:
                return await loop.run_in_executor(self.executor, fn, c, *args)
            except Exception as e:  # noqa: BLE001 (a server stopping meanwhile spoils only its row)
                return {"ok": False, "error": str(e)}
        results = await asyncio.gather(*(one(c) for c in chosen.values()))
        return dict(zip(chosen, results))

    async def statuses(self) -> dict[str, dict]:
        return await self._each(self._status, None)

    async def sync(self, users: list[str] | None, courses: list[str]) -> dict[str, dict]:
        return await self._each(self._sync, users, courses)


class Seen:
    """Which version of each course each user was last seen with (kept across restarts)."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict] = read_json(path, {}) or {}
        self.refreshed = 0.0

    def update(self, user: str, courses: dict):
        mine = self.data.setdefault(user, {})
        for course, info in courses.items():
            if isinstance(info, dict) and info.get("version"):
                mine[course] = {"version": info["version"], "synced": info.get("synced")}

    def save(self):
        write_json(self.path, self.data)

    def counts(self, course: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for courses in self.data.values():
            version = (courses.get(course) or {}).get("version")
            if version:
                out[version] = out.get(version, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# --- wiring --------------------------------------------------------------------------------------


@dataclass
class Context:
    """Every long-lived object of the service, wired once by ``from_args``."""

    store: CourseStore
    servers: Servers
    seen: Seen
    prefix: str
    executor: ThreadPoolExecutor
    locks: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args) -> "Context":
        import docker

        executor = ThreadPoolExecutor(8, thread_name_prefix="stackhub-courses")
        store = CourseStore(root=args.root, keep_versions=args.keep_versions, max_bytes=args.max_mb * 2**20,
                            git_timeout=args.git_timeout)
        servers = Servers(client=docker.from_env(max_pool_size=8), uid=args.uid, mount_path=args.mount_path,
                          executor=executor)
        return cls(store=store, servers=servers, seen=Seen(args.state / "courses-seen.json"),
                   prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/"),
                   executor=executor)

    def lock(self, course: str) -> asyncio.Lock:
        return self.locks.setdefault(course, asyncio.Lock())

    async def blocking(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def refresh_seen(self, force: bool = False):
        if force or time.monotonic() - self.seen.refreshed > STATUS_TTL:
            for user, status in (await self.servers.statuses()).items():
                self.seen.update(user, status)
            self.seen.refreshed = time.monotonic()
            self.seen.save()

    async def overview(self) -> dict:
        await self.refresh_seen()
        courses = await self.blocking(self.store.list)
        for c in courses:
            c["users"] = self.seen.counts(c["course"])
        return {"courses": courses, "users_seen": len(self.seen.data)}


# --- handlers ------------------------------------------------------------------------------------


class Base(ServiceHandler):
    """The hub lets in who holds this service's access scope: the group 'instructors' and admins."""

    def denied_message(self, model: dict) -> str:
        return (f"{model.get('kind', 'user')} {model['name']} may not manage courses: "
                "only members of the hub group 'instructors' and admins may")


class PageHandler(Base):
    api = False

    async def get(self):
        self.render_page("courses.html")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


class CoursesHandler(Base):
    async def get(self):
        self.send(await self.ctx.overview())


class CourseHandler(Base):
    async def put(self, name):  # tornado has already decoded the path argument
        ctype = (self.request.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        try:
            validate_name(name)
            if ctype in UPLOAD_TYPES:
                kind = UPLOAD_TYPES[ctype]
                source = Source(kind, self.get_argument("source", f"uploaded {kind}")[:300],
                                self.get_argument("ref", None) if kind == "bundle" else None)
                restore, upload = _flag(self.get_argument("restore", None)), io.BytesIO(self.request.body)
            elif ctype == "application/json":
                data = self.body()
                unknown = sorted(set(data) - {"git", "ref", "restore"})
                if unknown or not isinstance(data.get("git"), str):
                    raise CourseError('send {"git": "<URL>", "ref": "<branch|tag|commit>", "restore": false}'
                                      + (f"; unknown keys: {', '.join(unknown)}" if unknown else ""))
                source, restore, upload = Source("git", data["git"], data.get("ref") or None), bool(data.get("restore")), None
            else:
                raise CourseError(f"Content-Type {ctype} is not one of application/json, {', '.join(UPLOAD_TYPES)}", 415)
            async with self.ctx.lock(name):
                current = await self.ctx.blocking(self.ctx.store.publish, name, source, publisher=self.who,
                                                  restore=restore, upload=upload)
        except CourseError as e:
            log.info("%s: publishing %s refused: %s", self.who, name, e)
            raise web.HTTPError(e.status, str(e)) from None
        log.info("%s published %s version %s (%d files, restore=%s)", self.who, name, current["version"],
                 len(current["files"]), current["restore"])
        self.send({**{k: v for k, v in current.items() if k != "files"}, "files": len(current["files"])}, 201)

    async def delete(self, name):
        try:
            async with self.ctx.lock(name):
                removed = await self.ctx.blocking(self.ctx.store.remove, name)
        except CourseError as e:
            raise web.HTTPError(e.status, str(e)) from None
        if not removed:
            raise web.HTTPError(404, f"no published course {name!r}")
        log.info("%s removed course %s", self.who, name)
        self.send({"removed": name})


class SyncHandler(Base):
    async def post(self):
        data = self.body()
        users, courses = data.get("users"), data.get("courses") or []
        if users is not None and not (isinstance(users, list) and all(isinstance(u, str) for u in users)):
            raise web.HTTPError(400, '"users" must be a list of user names')
        if not (isinstance(courses, list) and all(isinstance(c, str) for c in courses)):
            raise web.HTTPError(400, '"courses" must be a list of course names')
        try:
            [validate_name(c) for c in courses]
        except CourseError as e:
            raise web.HTTPError(400, str(e)) from None
        t0 = time.monotonic()
        results = await self.ctx.servers.sync(users, courses)
        for user, res in results.items():
            if res.get("ok"):
                self.ctx.seen.update(user, res.get("courses", {}))
        self.ctx.seen.save()
        failed = sorted(u for u, r in results.items() if not r.get("ok"))
        log.info("%s: sync now in %d servers (%d failed) in %.1f s", self.who, len(results), len(failed),
                 time.monotonic() - t0)
        self.send({"users": results, "synced": len(results) - len(failed), "failed": failed,
                   "seconds": round(time.monotonic() - t0, 2)})


class UsersHandler(Base):
    async def get(self):
        await self.ctx.refresh_seen(force=_flag(self.get_argument("refresh", None)))
        self.send({"users": self.ctx.seen.data})


def make_app(ctx: Context) -> web.Application:
    return web.Application(routes(ctx.prefix, PageHandler, [
        ("courses", CoursesHandler),
        (r"courses/([^/]*)", CourseHandler),
        ("sync", SyncHandler),
        ("users", UsersHandler),
    ], not_found=Base), ctx=ctx, cookie_secret=os.urandom(32))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m spawner.courses_service", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True, help="port to listen on (all interfaces)")
    p.add_argument("--root", type=Path, required=True, help="the courses volume, read-write")
    p.add_argument("--state", type=Path, required=True, help="the hub's state directory (who has which version)")
    p.add_argument("--mount-path", required=True, help="where users' containers mount the courses volume")
    p.add_argument("--uid", type=int, default=1000, help="user id the sync runs as in users' containers")
    p.add_argument("--keep-versions", type=int, default=3)
    p.add_argument("--max-mb", type=int, default=256)
    p.add_argument("--git-timeout", type=float, default=120)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[%(levelname)1.1s %(asctime)s {SERVICE_NAME}] %(message)s")
    ctx = Context.from_args(args)
    ctx.store.clean_staging()
    ctx.store.install_tool()
    max_bytes = args.max_mb * 2**20
    log.info("courses in %s, served at %s", args.root, ctx.prefix)
    serve(make_app(ctx), args.port, log, max_body_size=max_bytes + 2**20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
