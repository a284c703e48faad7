"""``stackhub-sessions``: the admins' page and REST API for tags, session locks, starts and pre-warm.

A hub-managed JupyterHub service (``python -m spawner.services.sessions``) at
``/services/stackhub-sessions/``. Who may use it: hub admins (logged in through the hub's OAuth,
or with an API token) and services whose token has admin scopes (the ``make token`` token, which
the ``stackhub`` CLI uses). Anyone else gets 403. Every change is written to the audit log with
who made it.

REST API (JSON; under ``/services/stackhub-sessions/api``)::

    GET    tags                  catalog tags with hidden / recommended flags
    PUT    tags/<tag>            {"hidden": true|false}
    PUT    recommended           {"tag": "<tag>"|null}        (null: back to the config)
    GET    sessions              each with "course_checks": the published courses that failed (or were never
                                 checked) on its tag, from the course x tag checks of stackhub-courses
    PUT    sessions/<name>       {"tag", "group"?, "start"?, "end"?}   open (or change) a session
    DELETE sessions/<name>       close it
    GET    users | groups
    POST   jobs                  {"action": "start"|"stop", "user"|"group", "tag"?, "size"?, "concurrency"?}
    GET    jobs | jobs/<id>      progress of starts, pre-warms and stops
    GET    audit?limit=N
    GET    policy                the policy file's health: ok, problem, what is enforced
    POST   policy/repair         {"empty": false|true}   overwrite a bad policy.json with the
                                 last good policy (or, with "empty": true, with no policy)

A bad ``policy.json`` (not JSON, wrong types, ...) never lifts a lock: the last good policy stays
in force, the page shows the problem at the top, and a change made here applies to what is
enforced and replaces the bad file (kept as ``policy.json.rejected``). With no last good policy,
reads and changes answer 503 until ``policy/repair``.

The policy itself is stored by ``policy_store`` in the hub's state volume, where the spawner in the
hub process reads it.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tornado import web

from spawner.backends import engine_for
from spawner.backends.catalog_source import CatalogSource
from spawner.core import roles
from spawner.core.catalog import Catalog
from spawner.core.config import StackhubConfig, config_from_env
from spawner.courses.checks import CHECKS_FILE, NOT_CHECKED, CheckStore, session_warnings
from spawner.courses.sync import published as courses_published
from spawner.services.hubapi import HubAPI
from spawner.services.base import ServiceHandler, routes, serve
from spawner.services.jobs import Job, Jobs, Row
from spawner.core.policy import (Policy, PolicyConflict, PolicyError, Session, close_session, hide, open_session, parse_time, recommend,
                     show)
from spawner.hub.policy_store import PolicyStore, PolicyUnavailable, now_utc

log = logging.getLogger("stackhub.sessions")
MAX_CONCURRENCY = 16
ADMIN_SCOPES = {"admin:users", "admin:servers"}
PREWARM_CONCURRENCY = 3  # servers a pre-warm starts at a time unless the request says


@dataclass
class Context:
    """Every long-lived object of the service, wired once by ``from_config``."""

    cfg: StackhubConfig
    store: PolicyStore
    catalog: CatalogSource
    hub: HubAPI
    jobs: Jobs
    prefix: str
    concurrency: int
    checks: CheckStore | None = None       # course x tag results (None: courses are off)
    courses_root: Path | None = None       # the published courses (read here, written by stackhub-courses)

    def course_warnings(self, tag: str) -> list[dict]:
        """What the course checks say about ``tag``: a course failing on it, or never checked on it."""
        if self.checks is None or self.courses_root is None or not tag:
            return []
        published = [(name, current["version"]) for name, current in courses_published(self.courses_root)]
        return session_warnings(published, tag, self.checks)

    @classmethod
    def from_config(cls, cfg: StackhubConfig, *, state: Path, concurrency: int) -> "Context":
        hub = HubAPI(api_url=os.environ["JUPYTERHUB_API_URL"], token=os.environ["JUPYTERHUB_API_TOKEN"])
        from spawner.core.names import HUB_COURSES

        return cls(cfg=cfg, store=PolicyStore(state), catalog=engine_for(cfg).catalog_source(), hub=hub,
                   jobs=Jobs(hub, timeout=cfg.hub.start_timeout), concurrency=concurrency,
                   prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/stackhub-sessions/"),
                   checks=CheckStore(state / CHECKS_FILE) if cfg.courses.enabled else None,
                   courses_root=Path(HUB_COURSES) if cfg.courses.enabled else None)


def effective(catalog: Catalog, policy: Policy) -> Catalog:
    return catalog.with_recommended(policy.recommended)


def tags_view(catalog: Catalog, policy: Policy) -> dict:
    cat = effective(catalog, policy)
    return {
        "recommended": cat.recommended,
        "configured_recommended": catalog.recommended,
        "tags": [{"name": e.name, "class": e.tag.tag_class.value, "display": e.tag.display, "present": e.present,
                  "build_date": e.build_date, "hidden": e.name in policy.hidden, "recommended": e.name == cat.recommended}
                 for e in cat.entries],
        "hidden": sorted(policy.hidden),
    }


def sessions_view(policy: Policy, warnings=lambda tag: []) -> dict:
    """The sessions, each with what the course checks say about its tag (``warnings(tag)``)."""
    now = now_utc()
    return {"now": now.isoformat(),
            "sessions": [{**s.to_json(), "status": s.status(now), "course_checks": warnings(s.tag)}
                         for s in policy.sessions]}


def user_view(model: dict) -> dict:
    server = (model.get("servers") or {}).get("")
    view = None
    if server is not None:
        opts = server.get("user_options") or {}
        view = {"ready": server.get("ready", False), "pending": server.get("pending"),
                "tag": opts.get("image_tag"), "size": opts.get("size"), "started": server.get("started")}
    return {"name": model["name"], "admin": roles.is_admin(model.get("admin"), model.get("groups")), "groups": model.get("groups", []),
            "server": view}


class Base(ServiceHandler):
    """Only hub admins, and services whose token has admin scopes (``make token``'s)."""

    @property
    def ctx(self) -> Context:
        return self.settings["ctx"]

    def allowed(self, model: dict) -> bool:
        if model.get("kind") == "service":
            return ADMIN_SCOPES <= set(model.get("scopes") or ())
        return roles.is_admin(model.get("admin"), model.get("groups"))

    def denied_message(self, model: dict) -> str:
        return f"{model.get('kind', 'user')} {model['name']} is not a hub admin"

    def policy(self) -> Policy:
        """The enforced policy; 503 naming the problem when the file is bad and no last good one is known."""
        try:
            return self.ctx.store.load()
        except PolicyUnavailable as e:
            raise web.HTTPError(503, str(e)) from None

    async def change(self, fn, action: str, detail: dict):
        try:
            return self.ctx.store.change(fn, who=self.who, action=action, detail=detail)
        except PolicyUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        except PolicyError as e:
            raise web.HTTPError(409 if isinstance(e, PolicyConflict) else 400, str(e)) from None


class PageHandler(Base):
    api = False

    async def get(self):
        self.render_page("sessions.html", sizes=self.ctx.cfg.sizes, default_size=self.ctx.cfg.stack.default_size,
                         concurrency=self.ctx.concurrency, policy=self.ctx.store.state())


class TagsHandler(Base):
    async def get(self):
        self.send(tags_view(await self.ctx.catalog.get(), self.policy()))


class TagHandler(Base):
    async def put(self, tag):
        hidden = self.body().get("hidden")
        if not isinstance(hidden, bool):
            raise web.HTTPError(400, 'send {"hidden": true} or {"hidden": false}')
        catalog = await self.ctx.catalog.get()
        if hidden:
            rec = effective(catalog, self.policy()).recommended
            policy = await self.change(lambda p: hide(p, tag, effective_recommended=rec), "tags.hide", {"tag": tag})
        else:
            policy = await self.change(lambda p: show(p, tag), "tags.show", {"tag": tag})
        self.send(tags_view(catalog, policy))


class RecommendedHandler(Base):
    async def put(self):
        tag = self.body().get("tag")
        if tag is not None and not isinstance(tag, str):
            raise web.HTTPError(400, 'send {"tag": "<tag>"} or {"tag": null}')
        catalog = await self.ctx.catalog.get()
        policy = await self.change(lambda p: recommend(p, tag or None, known=catalog.names()),
                                   "tags.recommend", {"tag": tag or None})
        self.send(tags_view(catalog, policy))


class SessionsHandler(Base):
    async def get(self):
        self.send(sessions_view(self.policy(), self.ctx.course_warnings))


class SessionHandler(Base):
    async def put(self, name):
        data = self.body()
        unknown = sorted(set(data) - {"tag", "group", "start", "end"})
        if unknown:
            raise web.HTTPError(400, f"unknown keys {', '.join(unknown)}; allowed: tag, group, start, end")
        catalog = await self.ctx.catalog.get()
        if data.get("group"):
            if await self.ctx.hub.group(data["group"]) is None:
                raise web.HTTPError(400, f"no hub group {data['group']!r}")
        try:
            session = Session(name=name, tag=data.get("tag") or "", group=data.get("group") or None,
                              start=parse_time(data.get("start")), end=parse_time(data.get("end")),
                              opened_by=self.who, opened_at=now_utc())
        except PolicyError as e:
            raise web.HTTPError(400, str(e)) from None
        replaced = self.policy().session(name) is not None
        policy = await self.change(lambda p: open_session(p, session, known=catalog.names()),
                                   "session.update" if replaced else "session.open", session.to_json())
        warnings = self.ctx.course_warnings(policy.session(name).tag)
        for w in warnings:
            if w["state"] != NOT_CHECKED:
                log.warning("%s locks session %s to %s: %s", self.who, name, w["tag"], w["message"])
        self.send({**policy.session(name).to_json(), "status": session.status(now_utc()), "course_checks": warnings})

    async def delete(self, name):
        old = self.policy().session(name)
        await self.change(lambda p: close_session(p, name), "session.close",
                          old.to_json() if old else {"name": name})
        self.send({"closed": name})


class PolicyHandler(Base):
    async def get(self):
        self.send({**self.ctx.store.state().to_json(), "file": str(self.ctx.store.path)})


class PolicyRepairHandler(Base):
    async def post(self):
        empty = self.body().get("empty", False)
        if not isinstance(empty, bool):
            raise web.HTTPError(400, 'send {"empty": false} (restore the last good policy) or {"empty": true}')
        try:
            state = self.ctx.store.repair(empty=empty, who=self.who)
        except PolicyError as e:
            raise web.HTTPError(409, str(e)) from None
        self.send({**state.to_json(), "file": str(self.ctx.store.path)})


class UsersHandler(Base):
    async def get(self):
        self.send({"users": [user_view(u) for u in await self.ctx.hub.users()]})


class GroupsHandler(Base):
    async def get(self):
        self.send({"groups": [{"name": g["name"], "users": g.get("users", [])} for g in await self.ctx.hub.groups()]})


class JobsHandler(Base):
    async def get(self):
        self.send({"jobs": [j.to_json() for j in self.ctx.jobs.all()]})

    async def post(self):
        data = self.body()
        action = data.get("action")
        if action not in ("start", "stop"):
            raise web.HTTPError(400, 'action must be "start" or "stop"')
        unknown = sorted(set(data) - {"action", "user", "group", "tag", "size", "concurrency"})
        if unknown:
            raise web.HTTPError(400, f"unknown keys {', '.join(unknown)}; allowed: action, user, group, tag, size, concurrency")
        if bool(data.get("user")) == bool(data.get("group")):
            raise web.HTTPError(400, "name exactly one of user or group")
        try:
            concurrency = int(data.get("concurrency") or self.ctx.concurrency)
        except (TypeError, ValueError):
            raise web.HTTPError(400, "concurrency must be a number") from None
        concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
        if data.get("group"):
            group = await self.ctx.hub.group(data["group"])
            if group is None:
                raise web.HTTPError(404, f"no hub group {data['group']!r}")
            users = sorted(group.get("users") or [])
            if not users:
                raise web.HTTPError(400, f"hub group {data['group']!r} has no members")
        else:
            if await self.ctx.hub.user(data["user"]) is None:
                raise web.HTTPError(404, f"no hub user {data['user']!r}")
            users = [data["user"]]
        options = {}
        if action == "start":
            if not data.get("tag"):
                raise web.HTTPError(400, "a start needs a tag (a catalog tag or 'recommended')")
            options["image_tag"] = data["tag"]
            if data.get("size"):
                options["size"] = data["size"]
        job = Job(action=action, rows=[Row(u) for u in users], by=self.who, options=options,
                  group=data.get("group"), concurrency=concurrency)
        kind = "prewarm" if job.group else "server"
        self.ctx.store.record(who=self.who, action=f"{kind}.{action}",
                              detail={"job": job.id, "group": job.group, "users": users, **options})
        self.ctx.jobs.submit(job)
        self.send(job.to_json(), 202)


class JobHandler(Base):
    async def get(self, job_id):
        job = self.ctx.jobs.get(job_id)
        if job is None:
            raise web.HTTPError(404, f"no job {job_id}")
        self.send(job.to_json())


class AuditHandler(Base):
    async def get(self):
        try:
            limit = int(self.get_argument("limit", "100"))
        except ValueError:
            raise web.HTTPError(400, "limit must be a number") from None
        self.send({"audit": self.ctx.store.audit(limit)})


def make_app(ctx: Context) -> web.Application:
    return web.Application(routes(ctx.prefix, PageHandler, [
        ("tags", TagsHandler),
        (r"tags/([^/]+)", TagHandler),
        ("recommended", RecommendedHandler),
        ("sessions", SessionsHandler),
        (r"sessions/([^/]+)", SessionHandler),
        ("policy", PolicyHandler),
        ("policy/repair", PolicyRepairHandler),
        ("users", UsersHandler),
        ("groups", GroupsHandler),
        ("jobs", JobsHandler),
        (r"jobs/([0-9]+)", JobHandler),
        ("audit", AuditHandler),
    ], not_found=Base), ctx=ctx, cookie_secret=os.urandom(32))


def main() -> int:
    """Started by the hub (spawner.hub.apply): the config comes as the hub's own, nothing as flags."""
    from spawner.core.names import SESSIONS_PORT
    from spawner.state.paths import HubPaths

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s stackhub-sessions] %(message)s")
    ctx = Context.from_config(config_from_env(), state=HubPaths.from_env().state, concurrency=PREWARM_CONCURRENCY)
    serve(make_app(ctx), SESSIONS_PORT, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
