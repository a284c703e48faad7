"""``stackhub-courses``: the instructors' page and REST API for publishing courses.

A hub-managed JupyterHub service (``python -m spawner.services.courses``) at
``/services/stackhub-courses/``. Who may use it: members of the hub group ``instructors`` and
admins (the hub grants them ``access:services!service=stackhub-courses``), logged in through the
hub's OAuth or with an API token (the ``stackhub course`` CLI sends one). Anyone else gets 403.

REST API (JSON; under ``/services/stackhub-courses/api``)::

    GET    courses             published courses, their version and how many users have which version
    PUT    courses/<name>      publish: JSON {"git": URL, "ref"?, "restore"?}, or an upload with
                               Content-Type application/x-git-bundle (?ref=) or application/x-tar
                               (a directory), with ?restore=1 and ?source=<description>
    DELETE courses/<name>      unpublish (users' copies stay in their homes)
    GET|PUT courses/<name>/owners  {"owner": NAME, "shared": [NAME, ...]}: who may change or remove it

A course belongs to whoever first published it; they may share it with other instructors. Only the
owner, those it is shared with, and admins may publish over it or remove it.
    POST   sync                {"users"?: [...], "courses"?: [...]}: sync now in running servers
    GET    users               the version of each course each user was last seen with
    POST   checks              {"course": NAME, "tags"?: [TAG, ...]}: run the course's notebooks headless on
                               each tag (default: every stack tag), a few at a time; 202 with the job
    GET    checks | checks/<id>  check jobs and their progress (per tag: the notebook it is at, results)
    GET    courses/<name>/checks   the kept results of the current version (?version=) per tag

The files live in the courses volume (``courses.CourseStore``); users' containers mount it
read-only and run ``stackhub-course-sync`` (``coursesync``), which this service installs there on
start and runs through ``docker exec`` for "sync now".
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tornado import web

from spawner.backends import engine_for
from spawner.backends.base import EngineError, RunningServer
from spawner.core import names, roles
from spawner.core.catalog import Catalog
from spawner.core.config import Courses, StackhubConfig, config_from_env
from spawner.courses.records import STATUS_MAX_BYTES, check_courses, check_seen, parse_status
from spawner.courses.sources import GitPolicy, scrub
from spawner.courses import owners as course_owners
from spawner.courses.publish import CourseError, CourseStore, Limits, Source, extract_tar, validate_name
from spawner.courses.sync import STATE_DIR, STATUS_FILE, TOOL_NAME, TOOLS_DIR, write_json
from spawner.courses.checks import CHECKS_FILE, QUEUED, CheckStore, TagRun, matrix
from spawner.services.base import ServiceHandler, routes, serve
from spawner.services.course_checks import CheckJob, CheckJobs

log = logging.getLogger("stackhub.courses")
SERVICE_NAME = "stackhub-courses"
UPLOAD_TYPES = {"application/x-git-bundle": "bundle", "application/x-tar": "directory"}
SYNC_MAX_BYTES = 4 * 2**20  # the sync's JSON report, read from the user's container
STATUS_TTL = 10.0  # seconds the users' versions read from running servers are reused


def check_tags(catalog: Catalog) -> list[str]:
    """The tags a check covers by default: every stack tag present on the engine, in menu order."""
    return [e.name for e in catalog.entries if e.present]


# --- users' servers (through the backend's Engine) ------------------------------------------------------------------


def status_command(timeout: int) -> list[str]:
    """Read ``~/notebooks/.stackhub/status.json`` as the user: a regular file only (no symlink, FIFO
    or device), at most STATUS_MAX_BYTES + 1 bytes, killed after ``timeout`` seconds."""
    path = f'"$HOME/notebooks/{STATE_DIR}/{STATUS_FILE}"'
    script = f"f={path}; if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then exec head -c {STATUS_MAX_BYTES + 1} -- \"$f\"; fi"
    return ["timeout", "-s", "KILL", str(timeout), "sh", "-c", script]


class Servers:
    """Running user servers on the engine: read what each home has, run the sync in them.

    Every exec runs as the user, under ``timeout``, and the service also stops waiting after the
    same time (plus a margin): one hung or hostile container spoils only its own row.
    """

    def __init__(self, *, engine, uid: int, mount_path: str, executor: ThreadPoolExecutor,
                 exec_timeout: int = 10, sync_seconds: int = 60):
        self.engine = engine
        self.uid = uid
        self.tool = f"{mount_path}/{TOOLS_DIR}/{TOOL_NAME}"
        self.executor = executor
        self.exec_timeout = exec_timeout
        self.sync_seconds = sync_seconds

    def _status(self, server: RunningServer) -> dict:
        out = self.engine.exec(server, status_command(self.exec_timeout), user=str(self.uid),
                               timeout=self.exec_timeout, max_bytes=STATUS_MAX_BYTES + 1)
        courses, problems = parse_status(out.stdout, f"{server.user}: status.json")
        for p in problems:
            log.warning("%s", p)
        return {"ok": True, "courses": courses}

    def _sync(self, server: RunningServer, courses: list[str]) -> dict:
        cmd = ["timeout", "-s", "KILL", str(self.sync_seconds + 15), self.tool, "--json",
               f"--budget={self.sync_seconds}", *courses]
        out = self.engine.exec(server, cmd, user=str(self.uid), timeout=self.sync_seconds + 15, max_bytes=SYNC_MAX_BYTES)
        code, stdout, stderr = out.code, out.stdout, out.stderr
        try:
            data = json.loads((stdout or b"{}").decode())
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if code or not data.get("ok"):
            error = data.get("error") if isinstance(data.get("error"), str) else None
            return {"ok": False, "error": (error or (stderr or stdout or b"").decode(errors="replace").strip()[-300:]
                                           or ("timed out" if code == 137 else f"exit status {code}"))[:300]}
        return data

    async def _each(self, fn, users: list[str] | None, wait: float, *args) -> dict[str, dict]:
        loop = asyncio.get_running_loop()
        running = await loop.run_in_executor(self.executor, self.engine.running_servers)
        chosen = {u: c for u, c in running.items() if users is None or u in users}

        async def one(user, c):
            try:
                return await asyncio.wait_for(loop.run_in_executor(self.executor, fn, c, *args), wait)
            except asyncio.TimeoutError:
                log.warning("%s: no answer from the server in %.0f s", user, wait)
                return {"ok": False, "error": f"no answer in {wait:.0f} s"}
            except Exception as e:  # noqa: BLE001 (a server stopping meanwhile spoils only its row)
                return {"ok": False, "error": str(e)[:300]}
        results = await asyncio.gather(*(one(u, c) for u, c in chosen.items()))
        return dict(zip(chosen, results))

    async def statuses(self) -> dict[str, dict]:
        """user -> checked {course: {"version", "synced"}} of every running server that answered."""
        results = await self._each(self._status, None, self.exec_timeout + 5)
        return {u: r["courses"] for u, r in results.items() if r.get("ok")}

    async def sync(self, users: list[str] | None, courses: list[str]) -> dict[str, dict]:
        return await self._each(self._sync, users, self.sync_seconds + 30, courses)


FETCH_ROLE = "course-fetch"
FETCH_IN = "/tmp/in"          # request (and upload), put in by the service
FETCH_WORK = "/tmp/work"      # written by the fetch program, as nobody
FETCH_USER = "65534:65534"    # nobody


def fetch_container(image: str, request: dict, *, network: str, lifetime: int) -> dict:
    """``containers.create`` arguments of the throwaway fetch container. Pure.

    No Docker socket, no volume, nobody, no capabilities; a network only for a git URL. It lives
    ``lifetime`` seconds at most (its main process is ``sleep``), so a stuck fetch ends with it.
    """
    return dict(
        image=image,
        entrypoint=["sleep"],
        command=[str(lifetime)],
        user=FETCH_USER,
        working_dir="/tmp",
        network_mode=network if request["kind"] == "git" else "none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=256,
        mem_limit="1g",
        labels={names.LABEL_ROLE: FETCH_ROLE},
        environment={"HOME": "/tmp"},
        auto_remove=True,  # gone when its time is up, whatever happens to the service
        detach=True,
    )


def _tar_of(files: dict[str, bytes | Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid = 0o644, 65534, 65534
            if isinstance(data, Path):
                info.size = data.stat().st_size
                with open(data, "rb") as f:
                    tar.addfile(info, f)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Chunks(io.RawIOBase):
    """A file object over an iterator of bytes (``get_archive``'s stream)."""

    def __init__(self, chunks):
        self.chunks, self.rest = iter(chunks), b""

    def readable(self):
        return True

    def readinto(self, b):
        while not self.rest:
            try:
                self.rest = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self.rest))
        b[:n], self.rest = self.rest[:n], self.rest[n:]
        return n


class ContainerFetcher:
    """Runs ``courses.fetch_tree`` in a throwaway container of the hub image (``Fetcher`` of the store)."""

    def __init__(self, engine, image: str, *, network: str = "bridge"):
        self.engine, self.image, self.network = engine, image, network

    def fetch(self, request: dict, upload, staging: Path) -> dict:
        lifetime = int(request["timeout"]) * 3 + 30
        files: dict[str, bytes | Path] = {"in/request.json": json.dumps(request).encode()}
        if upload is not None:
            path = staging / "upload"
            with open(path, "wb") as f:
                shutil.copyfileobj(upload, f)
            files["in/upload"] = path
        try:
            with self.engine.throwaway(**fetch_container(self.image, request, network=self.network,
                                                         lifetime=lifetime)) as c:
                c.put("/tmp", _tar_of(files))
                (staging / "upload").unlink(missing_ok=True)
                cmd = ["python", "-m", "spawner.courses.publish", "fetch", f"{FETCH_IN}/request.json", FETCH_WORK]
                if upload is not None:
                    cmd.append(f"{FETCH_IN}/upload")
                out = c.exec(cmd, user=FETCH_USER, workdir="/srv/stackhub", timeout=lifetime, max_bytes=2**20)
                try:
                    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
                except (ValueError, IndexError):
                    raise CourseError(f"fetching the source failed ({out.code}): "
                                      f"{out.stderr.decode(errors='replace').strip()[-300:]}", 500) from None
                if not result.get("ok"):
                    raise CourseError(result.get("error") or "fetching the source failed", result.get("status", 400))
                # the checked tree comes back through the same checks (names, links, limits)
                extract_tar(_Chunks(c.get_archive(f"{FETCH_WORK}/tree")), staging, max_bytes=request["max_bytes"],
                            max_files=request["max_files"] + 1)
                return {"commit": result.get("commit")}
        except EngineError as e:  # e.g. its time ran out and it is gone
            raise CourseError(f"fetching the source failed: {e}", 500) from None
        finally:
            (staging / "upload").unlink(missing_ok=True)


class Seen:
    """Which version of each course each user was last seen with (kept across restarts).

    What containers say is checked (``course_records``) before it is kept; a file that does not
    parse or fit the schema is set aside as ``<name>.bad`` with a log line, and the service goes on.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict] = self._load()
        self.refreshed = 0.0

    def _load(self) -> dict:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.error("%s: cannot read (%s); starting with no users seen", self.path, e)
            return {}
        try:
            data, problems = check_seen(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            data, problems = {}, [f"{self.path.name}: not JSON; starting with no users seen"]
        for p in problems:
            log.warning("%s", p)
        if problems:
            try:
                os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
            except OSError:
                pass
        return data

    def update(self, user: str, courses: dict):
        good, problems = check_courses(courses, f"{user}: sync result")
        for p in problems:
            log.warning("%s", p)
        if good:
            self.data.setdefault(user, {}).update(good)

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
    checks: CheckJobs | None = None
    catalog_source: object = None   # the engine's tag catalog (``get()``), for the checks' tags
    locks: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: StackhubConfig, *, state: Path, root: Path, engine=None) -> "Context":
        settings: Courses = cfg.courses
        executor = ThreadPoolExecutor(8, thread_name_prefix="stackhub-courses")
        # no engine call waits longer than the longest step it runs (a hung engine frees the thread)
        engine = engine or engine_for(cfg, pool=8, timeout=max(settings.git_timeout * 3, settings.sync_seconds) + 60)
        store = CourseStore(root=root, keep_versions=settings.keep_versions, limits=limits(settings),
                            git_policy=git_policy(settings),
                            fetcher=ContainerFetcher(engine, engine.own_image(cfg.hub.image),
                                                     network=settings.fetch_network))
        servers = Servers(engine=engine, uid=cfg.spawner.uid, mount_path=settings.mount_path, executor=executor,
                          exec_timeout=settings.exec_timeout, sync_seconds=settings.sync_seconds)
        checks = CheckJobs(cfg=cfg, runner=engine.check_runner(), store=CheckStore(state / CHECKS_FILE))
        return cls(store=store, servers=servers, seen=Seen(state / "courses-seen.json"),
                   prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/"),
                   executor=executor, checks=checks, catalog_source=engine.catalog_source())

    def lock(self, course: str) -> asyncio.Lock:
        return self.locks.setdefault(course, asyncio.Lock())

    async def blocking(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def refresh_seen(self, force: bool = False):
        if force or time.monotonic() - self.seen.refreshed > STATUS_TTL:
            for user, status in (await self.servers.statuses()).items():
                self.seen.update(user, status)
            self.seen.refreshed = time.monotonic()
            try:
                self.seen.save()
            except OSError as e:  # a full disk must not take the page down
                log.error("cannot save %s: %s", self.seen.path, e)

    async def catalog(self) -> Catalog:
        return await self.catalog_source.get()

    async def overview(self) -> dict:
        await self.refresh_seen()
        courses = await self.blocking(self.store.list)
        tags = []
        if self.checks is not None:
            try:
                tags = check_tags(await self.catalog())
            except Exception as e:  # noqa: BLE001 (an engine hiccup must not take the page down)
                log.warning("cannot read the tag catalog: %s", e)
        for c in courses:
            c["users"] = self.seen.counts(c["course"])
            if self.checks is not None:
                results = self.checks.store.results(c["course"], c["version"])
                running = self.checks.running_for(c["course"], c["version"])
                if running:
                    results.update({r.tag: r.to_json() for r in running.runs})
                c["checks"] = matrix(results, tags + sorted(set(results) - set(tags)))
        return {"courses": courses, "users_seen": len(self.seen.data), "tags": tags}


# --- handlers ------------------------------------------------------------------------------------


class Base(ServiceHandler):
    """The hub lets in who holds this service's access scope: the group 'instructors' and admins."""

    def _request_summary(self) -> str:
        # tornado's error log lines name the request: without the query, where a ?source= URL
        # may carry credentials
        return f"{self.request.method} {scrub(self.request.path)[:500]} ({self.request.remote_ip})"

    def denied_message(self, model: dict) -> str:
        return (f"{model.get('kind', 'user')} {model['name']} may not manage courses: "
                "only members of the hub group 'instructors' and admins may")

    @property
    def is_admin(self) -> bool:
        """A hub admin, or a service (the operator's own, e.g. the CLI's admin token)."""
        m = self.current_user
        return roles.is_admin(m.get("admin"), m.get("groups")) or m.get("kind") == "service"

    async def require_change(self, name: str) -> course_owners.Ownership | None:
        """403 unless the caller may change course ``name`` (their own, shared with them, or an
        admin); its ownership (None: not published yet, anyone here may create it)."""
        ownership = await self.ctx.blocking(self.ctx.store.ownership, name)
        if ownership is not None and not ownership.may_change(self.current_user["name"], admin=self.is_admin):
            log.info("%s may not change course %s (owner %s)", self.who, name, ownership.owner)
            raise web.HTTPError(403, f"course {name!r} belongs to {ownership.owner or 'the admins'}; only its owner, "
                                     "the instructors it is shared with and admins may change or remove it")
        return ownership

    async def current_course(self, name) -> dict:
        """The published course ``name``'s current version: 400 for a bad name, 404 if unpublished."""
        try:
            current = await self.ctx.blocking(self.ctx.store.current, validate_name(name))
        except CourseError as e:
            raise web.HTTPError(400, str(e)) from None
        if current is None:
            raise web.HTTPError(404, f"no published course {name!r}")
        return current


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
                await self.require_change(name)
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
                await self.require_change(validate_name(name))
                removed = await self.ctx.blocking(self.ctx.store.remove, name)
        except CourseError as e:
            raise web.HTTPError(e.status, str(e)) from None
        if not removed:
            raise web.HTTPError(404, f"no published course {name!r}")
        log.info("%s removed course %s", self.who, name)
        self.send({"removed": name})


class OwnersHandler(Base):
    """``PUT courses/<name>/owners`` {"shared": [NAME, ...], "owner"?: NAME}: the owner (or an admin)
    shares the course with other instructors; only an admin gives it another owner."""

    async def get(self, name):
        await self.current_course(name)
        self.send((await self.ctx.blocking(self.ctx.store.ownership, name)).to_json())

    async def put(self, name):
        await self.current_course(name)
        try:
            wanted = course_owners.parse(self.body())
        except course_owners.OwnersError as e:
            raise web.HTTPError(400, str(e)) from None
        async with self.ctx.lock(name):
            ownership = await self.require_change(name)
            if ownership.owner != self.current_user["name"] and not self.is_admin:
                raise web.HTTPError(403, f"only the owner of course {name!r} ({ownership.owner}) and admins may share it")
            owner = ownership.owner if wanted.owner is None else wanted.owner
            if owner != ownership.owner and not self.is_admin:
                raise web.HTTPError(403, "only admins may give a course another owner")
            new = course_owners.Ownership(owner, tuple(u for u in wanted.shared if u != owner))
            await self.ctx.blocking(self.ctx.store.set_ownership, name, new)
        log.info("%s set the owners of course %s: %s", self.who, name, new.to_json())
        self.send(new.to_json())


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


class ChecksHandler(Base):
    async def get(self):
        self.send({"checks": [j.to_json() for j in self.ctx.checks.all()]})

    async def post(self):
        """Check a published course on some tags: {"course": NAME, "tags"?: [TAG, ...]} (default: every tag)."""
        data = self.body()
        unknown = sorted(set(data) - {"course", "tags"})
        if unknown:
            raise web.HTTPError(400, f"unknown keys {', '.join(unknown)}; allowed: course, tags")
        course, tags = data.get("course"), data.get("tags")
        if not isinstance(course, str):
            raise web.HTTPError(400, 'send {"course": "<name>", "tags": ["<tag>", ...]}')
        if tags is not None and not (isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags)):
            raise web.HTTPError(400, '"tags" must be a non-empty list of stack tags')
        current = await self.current_course(course)
        catalog = await self.ctx.catalog()
        allowed = check_tags(catalog)
        chosen = []
        for t in tags or allowed:
            entry = catalog.get(t)
            if entry is None or not entry.present:
                raise web.HTTPError(400, f"unknown stack tag {t!r}; allowed: {', '.join(allowed + ['recommended'])}")
            if entry.name not in chosen:
                chosen.append(entry.name)
        notebooks = sum(1 for f in current["files"] if f.endswith(".ipynb"))
        if not notebooks:
            raise web.HTTPError(400, f"course {course!r} (version {current['version']}) has no notebooks to check")
        images = {t: catalog.get(t).image for t in chosen}
        job = CheckJob(course=course, version=current["version"], notebooks=notebooks, by=self.who,
                       runs=[TagRun(tag=t, state=QUEUED) for t in chosen])
        log.info("%s: check %s of %s %s on %s", self.who, job.id, course, job.version, ", ".join(chosen))
        self.ctx.checks.submit(job, images)
        self.send(job.to_json(), 202)


class CheckHandler(Base):
    async def get(self, job_id):
        job = self.ctx.checks.get(job_id)
        if job is None:
            raise web.HTTPError(404, f"no check {job_id}")
        self.send(job.to_json())


class CheckResultsHandler(Base):
    async def get(self, name):
        """The stored results of a course's current version (or ?version=), per tag."""
        current = await self.current_course(name)
        version = self.get_argument("version", current["version"])[:64]
        results = self.ctx.checks.store.results(name, version)
        tags = check_tags(await self.ctx.catalog())
        self.send({"course": name, "version": version, "current": current["version"],
                   "checks": matrix(results, tags + sorted(set(results) - set(tags)))})


def log_request(handler: web.RequestHandler):
    """Tornado's access log line, without the query (a ``?source=`` URL may carry credentials)."""
    status = handler.get_status()
    level = log.info if status < 400 else log.warning if status < 500 else log.error
    r = handler.request
    level("%d %s %s (%s) %.1fms", status, r.method, scrub(r.path)[:500], r.remote_ip, 1000 * r.request_time())


def limits(settings: Courses) -> Limits:
    return Limits(max_bytes=settings.max_mb * 2**20, max_files=settings.max_files,
                  max_clone_bytes=settings.max_clone_mb * 2**20, timeout=settings.git_timeout)


def git_policy(settings: Courses) -> GitPolicy:
    return GitPolicy(schemes=tuple(settings.git_schemes), allowed_hosts=tuple(settings.git_allowed_hosts))


def make_app(ctx: Context) -> web.Application:
    return web.Application(routes(ctx.prefix, PageHandler, [
        ("courses", CoursesHandler),
        (r"courses/([^/]*)", CourseHandler),
        ("sync", SyncHandler),
        ("users", UsersHandler),
        ("checks", ChecksHandler),
        (r"checks/([0-9]+)", CheckHandler),
        (r"courses/([^/]*)/checks", CheckResultsHandler),
        (r"courses/([^/]*)/owners", OwnersHandler),
    ], not_found=Base), ctx=ctx, cookie_secret=os.urandom(32), log_function=log_request)


def main() -> int:
    """Started by the hub (spawner.hub.apply): the config comes as the hub's own, nothing as flags.
    Sources are fetched in throwaway containers of the hub's own image."""
    from spawner.core.names import HUB_COURSES
    from spawner.state.paths import HubPaths

    cfg = config_from_env()
    logging.basicConfig(level=logging.INFO, format=f"[%(levelname)1.1s %(asctime)s {SERVICE_NAME}] %(message)s")
    ctx = Context.from_config(cfg, state=HubPaths.from_env().state, root=Path(HUB_COURSES))
    ctx.store.clean_staging()
    ctx.store.install_tool()
    ctx.checks.runner.remove_leftovers(cfg.hub.prefix)  # checks cut short by a restart of the service
    log.info("courses in %s, served at %s; sources are fetched in containers of %s", HUB_COURSES, ctx.prefix,
             ctx.store.fetcher.image)
    serve(make_app(ctx), cfg.courses.service_port, log, max_body_size=cfg.courses.max_mb * 2**20 + 2**20)
    return 0

if __name__ == "__main__":
    sys.exit(main())
