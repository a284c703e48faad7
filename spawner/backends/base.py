"""What every backend's spawner and every service share, whatever the engine.

Two halves:

- ``StackhubSpawnerMixin``, mixed in before the library spawner
  (``class LSSTDockerSpawner(StackhubSpawnerMixin, DockerSpawner)``). It owns the way from the spawn
  form to a ``ServerSpec``: the form, the server-side check of ``user_options`` against the tag
  catalog and the policy (HTTP 400 naming what is allowed, before anything exists on the engine),
  and the progress events. A backend only turns the spec into its library's traits
  (``apply_spec``, through a pure ``objects.py``) and says where its catalog comes from.
- ``Engine``, what the services (sessions, courses, diskwatch) use instead of importing an engine
  SDK: the catalog, this deployment's running servers, exec into one as the user, home volume
  sizes, throwaway containers. ``spawner.backends.engine_for(cfg)`` builds the one for the
  configured backend.

Config reaches the spawner by one route: the model's JSON in the ``stackhub_config`` trait (a plain
dict, which traitlets copies like any other value), parsed once per spawner.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from markupsafe import escape
from tornado import web
from traitlets import Dict, Type, Unicode, default
from traitlets.config import Configurable

from spawner.core.catalog import Catalog, TagEntry
from spawner.core.config import StackhubConfig
from spawner.core.disk import VolumeUsage
from spawner.core.orphans import ServerObject
from spawner.core.options import (OptionsError, Restriction, build_menu, check_user_total, options_from_form,
                                  render_form, validate_options)
from spawner.core.policy import PolicyUnavailable
from spawner.core.specs import ServerSpec, build_server_spec


class StackhubSpawnerMixin(Configurable):
    """The engine-independent half of every stackhub spawner (see the module docstring)."""

    stackhub_config = Dict(
        help="""The stackhub config (spawner.core.config.StackhubConfig) as JSON data.

        jupyterhub_config.py loads stackhub.yaml and sets the model's JSON here; tags, sizes,
        volumes and the network all come from it. Empty means every default.
        """,
    ).tag(config=True)

    state_dir = Unicode(
        "/srv/stackhub/state",
        help="""The hub's state directory: the tag policy (policy.json) and the disk budget records live here.""",
    ).tag(config=True)

    policy_class = Type(
        None,
        allow_none=True,
        help="""Tag policy: a class with ``for_state(state_dir, cfg)`` whose instance has
        ``async restriction_for(user) -> Restriction``.

        Used for hidden tags and tutorial session locks; None means every catalog tag is offered.
        One instance per hub process, shared by all spawners.
        """,
    ).tag(config=True)

    disk_notices_class = Type(
        None,
        allow_none=True,
        help="""Home budget notes: a class with ``for_state(state_dir, cfg)`` whose instance has
        ``notice_html(username) -> str``; the spawn form shows it. None shows nothing.
        """,
    ).tag(config=True)

    # one per hub process and spawner class: policy reader, disk notes, catalog source
    _shared: dict = {}

    # -- config, and what is shared by every spawner of the process ------------------------

    @property
    def cfg(self) -> StackhubConfig:
        cfg = self.__dict__.get("_stackhub_cfg")
        if cfg is None:
            cfg = StackhubConfig.model_validate(self.stackhub_config) if self.stackhub_config else StackhubConfig()
            self.__dict__["_stackhub_cfg"] = cfg
        return cfg

    def shared(self, key, make):
        """The process-wide object ``key`` of this spawner class, made once by ``make()``."""
        k = (type(self), key)
        if k not in StackhubSpawnerMixin._shared:
            StackhubSpawnerMixin._shared[k] = make()
        return StackhubSpawnerMixin._shared[k]

    @property
    def policy(self):
        if self.policy_class is None:
            return None
        return self.shared(("policy", self.policy_class), lambda: self.policy_class.for_state(Path(self.state_dir), self.cfg))

    @property
    def disk_notices(self):
        if self.disk_notices_class is None:
            return None
        return self.shared(("disk_notices", self.disk_notices_class), lambda: self.disk_notices_class.for_state(Path(self.state_dir), self.cfg))

    def catalog_source(self):
        return self.shared("catalog", self.make_catalog_source)

    # -- what a backend provides ----------------------------------------------------------

    def make_catalog_source(self):
        """The backend's ``CatalogSource`` (images on the engine, a registry, a ConfigMap)."""
        raise NotImplementedError

    async def check_image(self, entry: TagEntry):
        """Raise if ``entry``'s image is gone from the engine since the catalog was read; a
        backend that cannot tell cheaply leaves this as it is."""

    def apply_spec(self, spec: ServerSpec):
        """Set the library spawner's traits from ``spec`` (through the backend's pure objects.py)."""
        raise NotImplementedError

    # -- the form and the check of user_options ------------------------------------------

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, options: spawner.apply_stack_options(options)

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    async def restriction(self) -> Restriction:
        if self.policy is None:
            return Restriction()
        try:
            return await self.policy.restriction_for(self.user)
        except PolicyUnavailable as e:  # a bad policy file and no last good one: refuse, never fail open
            raise web.HTTPError(503, str(e)) from None

    async def render_options_form(self) -> str:
        catalog = await self.catalog_source().get()
        menu = build_menu(catalog, await self.restriction())
        form = render_form(menu, self.cfg.sizes, self.cfg.stack.default_size)
        return self.exit_notice() + self.disk_notice() + form

    # -- why the last server stopped (out of memory, died at start), kept in the spawner's state ------

    @property
    def last_exit(self) -> str:
        return self.__dict__.get("_stackhub_last_exit", "")

    @last_exit.setter
    def last_exit(self, message: str):
        self.__dict__["_stackhub_last_exit"] = message

    def exit_notice(self) -> str:
        if not self.last_exit:
            return ""
        return (f'<div class="alert alert-warning" role="alert" id="stackhub-last-exit">'
                f'<pre style="white-space: pre-wrap">{escape(self.last_exit)}</pre></div>')

    def get_state(self):
        state = super().get_state()
        if self.last_exit:
            state["stackhub_last_exit"] = self.last_exit
        return state

    def load_state(self, state):
        super().load_state(state)
        self.last_exit = state.get("stackhub_last_exit", "")

    def clear_state(self):
        """JupyterHub clears the state when a server stops, then saves it: the reason it stopped
        stays, for the spawn page, until a start succeeds."""
        keep = self.last_exit
        super().clear_state()
        self.last_exit = keep

    def disk_notice(self) -> str:
        if self.disk_notices is None:
            return ""
        try:
            return self.disk_notices.notice_html(self.user.name)
        except Exception:  # noqa: BLE001 - a note must never break the spawn page
            self.log.exception("stackhub: cannot read the disk budget notes")
            return ""

    async def image_gone(self, entry: TagEntry):
        """The 400 for a tag whose image left the engine: the catalog is read again, so the
        message (and the next form) lists only what is there."""
        source = self.catalog_source()
        source.invalidate()
        fresh: Catalog = await source.get()
        raise web.HTTPError(
            400, f"the image of image_tag {entry.name!r} is gone; allowed: {', '.join(fresh.names())}"
        ) from None

    def other_servers_sizes(self) -> list:
        """Sizes of this user's other servers that run or are starting (per-user total, server side)."""
        by_name = {s.name: s for s in self.cfg.sizes}
        sizes = []
        for name, spawner in self.user.spawners.items():
            if spawner is self or name == (self.name or "") or not spawner.active:
                continue
            chosen = (spawner.user_options or {}).get("size", self.cfg.stack.default_size)
            sizes.append(by_name.get(chosen) or by_name[self.cfg.stack.default_size])
        return sizes

    async def apply_stack_options(self, options):
        """Validate user_options and set image, mounts and limits; HTTP 400 names what is allowed."""
        self._progress_events = [{"progress": 5, "message": "Checking the requested stack tag and size"}]
        catalog = await self.catalog_source().get()
        try:
            choice = validate_options(
                options, catalog, self.cfg.sizes, default_size=self.cfg.stack.default_size,
                restriction=await self.restriction(),
            )
            check_user_total(choice.size, self.other_servers_sizes(),
                             total_cpu=self.cfg.hub.named_servers.total_cpu,
                             total_memory=self.cfg.hub.named_servers.total_memory)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        if choice.entry.present:
            await self.check_image(choice.entry)
        self.apply_spec(build_server_spec(self.cfg, self.user.name, self.name or "", choice))

    # -- progress ----------------------------------------------------------------------------

    def _event(self, progress: int, message: str):
        self.__dict__.setdefault("_progress_events", []).append({"progress": progress, "message": message})

    async def progress(self):
        sent = 0
        while True:
            events = getattr(self, "_progress_events", [])
            while sent < len(events):
                yield events[sent]
                sent += 1
            if self._spawn_pending is False and sent:
                break
            await asyncio.sleep(0.25)


# -- what services use ---------------------------------------------------------------------------


class EngineError(Exception):
    """The engine refused or failed a call a service asked for (its message goes on the page)."""


class UnavailableRunner:
    """The course check runner of an engine that cannot run check containers yet: each check's
    cell says why, and nothing is left behind to clean."""

    def __init__(self, reason: str):
        self.reason = reason

    def run(self, spec, on_line):
        raise EngineError(self.reason)

    def remove_leftovers(self, prefix: str) -> None:
        return None


@dataclass(frozen=True)
class RunningServer:
    """One running user server of this deployment, as an engine found it."""

    user: str
    server: str  # "" for the default server
    name: str    # the engine object's name (container, service, pod)
    ref: object = field(default=None, compare=False, repr=False)  # the engine's own handle


@dataclass(frozen=True)
class ExecResult:
    code: int | None  # None: the command was cut off (time or output) before it ended
    stdout: bytes
    stderr: bytes
    truncated: bool = False  # more output came than the caller's max_bytes; the rest was not read
    timed_out: bool = False  # the command did not end within the caller's timeout


# Every exec into a user's container is bounded: what a user's container prints or how long it
# takes is the user's to choose, and the service that asked must go on with the other users.
EXEC_TIMEOUT = 60.0
EXEC_MAX_BYTES = 4 * 2**20


def in_time(argv: list[str], timeout: float) -> list[str]:
    """``argv`` killed in the container after ``timeout`` seconds (coreutils ``timeout``, in every
    stackhub image), so a command the caller stopped waiting for does not go on running there."""
    return ["timeout", "-s", "KILL", str(max(1, math.ceil(timeout))), *argv]


class ExecOutput:
    """An exec's stdout and stderr as they come, each kept up to ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.out, self.err = bytearray(), bytearray()
        self.truncated = False

    def add(self, stdout: bytes | None, stderr: bytes | None) -> bool:
        """Keep what fits; False once either stream has more than ``max_bytes`` (stop reading)."""
        for buf, data in ((self.out, stdout), (self.err, stderr)):
            if data:
                room = self.max_bytes - len(buf)
                buf += data[:max(room, 0)]
                self.truncated = self.truncated or len(data) > room
        return not self.truncated

    def result(self, code: int | None, *, timed_out: bool = False) -> ExecResult:
        return ExecResult(code, bytes(self.out), bytes(self.err), truncated=self.truncated, timed_out=timed_out)


class Throwaway(Protocol):
    """A short-lived container of one image (the course fetch): files in, one command, a tree out."""

    def put(self, path: str, tar_bytes: bytes) -> None: ...
    def exec(self, argv: list[str], *, user: str, workdir: str | None = None, timeout: float = EXEC_TIMEOUT,
             max_bytes: int = EXEC_MAX_BYTES) -> ExecResult: ...
    def get_archive(self, path: str): ...  # an iterator of tar chunks


class Engine(Protocol):
    """The engine as the services see it; one per service process (``engine_for(cfg)``)."""

    def catalog_source(self): ...
    def running_servers(self) -> dict[str, RunningServer]: ...
    def server(self, user: str, server: str) -> RunningServer | None: ...
    def server_objects(self) -> list[ServerObject]: ...  # every user container, running or not
    def remove_server(self, obj: ServerObject) -> None: ...
    def exec(self, handle: RunningServer, argv: list[str], *, user: str, environment: dict | None = None,
             timeout: float = EXEC_TIMEOUT, max_bytes: int = EXEC_MAX_BYTES) -> ExecResult: ...
    def volume_usage(self) -> list[VolumeUsage]: ...
    def home_size(self, volume: str, *, timeout: float) -> int | None: ...  # one volume; None: not in time
    def own_image(self, fallback: str) -> str: ...
    def throwaway(self, **container):  # a context manager yielding a Throwaway
        ...
    def check_runner(self):  # runs a courses.checks.CheckContainer: run(spec, on_line), remove_leftovers(prefix)
        ...
