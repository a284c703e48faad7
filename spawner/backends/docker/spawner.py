"""``LSSTDockerSpawner``: DockerSpawner serving the LSST stack, one container per user server.

What it adds to DockerSpawner, and why:
- the spawn form and ``user_options`` (``image_tag``, ``size``) are checked on the server against
  the tag catalog read from image labels; a refusal is HTTP 400 naming the allowed values, raised
  before any container or volume exists;
- every Docker name comes from ``names``; the container is built by the pure ``build_server_spec``;
- the per-user home volume (labelled, shared by all named servers) is mounted so the non-root user
  owns it, and data mounts are read-only;
- Docker calls run on a pool of threads, not DockerSpawner's single thread, so a tutorial's burst
  of spawns runs side by side;
- spawn progress events: image, volumes, container, server answering.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import docker
from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Any, Integer, default

from spawner.core import names
from spawner.backends.catalog_source import CatalogSource
from spawner.backends.docker import objects
from spawner.core.config import DockerBackend, StackhubConfig
from spawner.core.policy import PolicyUnavailable
from spawner.core.options import (OptionsError, Restriction, build_menu, options_from_form, render_form,
                      validate_options)
from spawner.core.specs import ServerSpec, build_server_spec


class LSSTDockerSpawner(DockerSpawner):
    stackhub_config = Any(
        help="""The stackhub config model (spawner.core.config.StackhubConfig).

        jupyterhub_config.py loads it from stackhub.yaml and sets it here; tags, sizes, volumes and
        the network all come from it.
        """,
    ).tag(config=True)

    docker_workers = Integer(
        DockerBackend.model_fields["workers"].default,  # one default, the config model's
        help="""Docker API calls that may run at the same time, shared by all spawners.

        Stock DockerSpawner runs every call on one thread, so in a burst each spawn waits for all
        the others' calls. Set from spawner.backend.workers in stackhub.yaml.
        """,
    ).tag(config=True)

    start_concurrency = Integer(
        DockerBackend.model_fields["starting"].default,
        help="""User servers that may be starting at once, shared by all spawners; 0 = no limit.

        A server is starting from its container's start until JupyterLab listens. JupyterLab's start
        is CPU-bound, so in a burst on a few cores all of them starting together finish together, at
        the end; in turns (arrival order), most are ready far sooner and the last is not later.
        Set from spawner.backend.starting in stackhub.yaml.
        """,
    ).tag(config=True)

    policy = Any(
        None,
        help="""Optional tag policy: an object with ``async restriction_for(user) -> Restriction``.

        Used for hidden tags and tutorial session locks; None means every catalog tag is offered.
        """,
    ).tag(config=True)

    disk_notices = Any(
        None,
        help="""Optional home budget notes: an object with ``notice_html(username) -> str``.

        stackhub-diskwatch records who is near or over their disk budget; the spawn form shows it.
        """,
    ).tag(config=True)

    # shared by all instances of the class (one hub process): executor, client, catalog
    _pool = None
    _catalog_source = None
    _start_gate = None

    @property
    def cfg(self) -> StackhubConfig:
        return self.stackhub_config or StackhubConfig()

    @property
    def executor(self):
        cls = self.__class__
        if cls._pool is None:
            cls._pool = ThreadPoolExecutor(self.docker_workers, thread_name_prefix="stackhub-docker")
        return cls._pool

    @default("client_kwargs")
    def _default_client_kwargs(self):
        # one HTTP connection per worker, or the pool becomes the queue
        return {"max_pool_size": self.docker_workers}

    def start_gate(self):
        """The semaphore all spawners of this hub take turns through (FIFO), or no gate at all."""
        cls = self.__class__
        if cls._start_gate is None:
            cls._start_gate = (asyncio.Semaphore(self.start_concurrency) if self.start_concurrency
                               else contextlib.nullcontext())
        return cls._start_gate

    def catalog_source(self) -> CatalogSource:
        cls = self.__class__
        if cls._catalog_source is None:
            stack = self.cfg.stack
            cls._catalog_source = CatalogSource(
                client=self.client, repository=stack.repository, recommended=stack.recommended,
                ttl=stack.catalog_ttl, registry=stack.registry, executor=self.executor,
            )
        return cls._catalog_source

    # -- defaults DockerSpawner takes from config ------------------------------------------

    @default("remove")
    def _default_remove(self):
        # a stopped server's container goes, so the next start uses the tag then chosen
        return True

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        return True

    @default("network_name")
    def _default_network_name(self):
        return self.cfg.hub.network

    @default("cmd")
    def _default_cmd(self):
        # named so DockerSpawner need not inspect the image to learn it
        return ["stackhub-start"]

    @default("pull_policy")
    def _default_pull_policy(self):
        return "ifnotpresent" if self.cfg.stack.registry else "skip"

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, options: spawner.apply_stack_options(options)

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    # -- the form and the check of user_options ------------------------------------------

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
        return self.disk_notice() + form

    def disk_notice(self) -> str:
        if self.disk_notices is None:
            return ""
        try:
            return self.disk_notices.notice_html(self.user.name)
        except Exception:  # noqa: BLE001 - a note must never break the spawn page
            self.log.exception("stackhub: cannot read the disk budget notes")
            return ""

    async def apply_stack_options(self, options):
        """Validate user_options and set image, mounts and limits; HTTP 400 names what is allowed."""
        self._progress_events = [{"progress": 5, "message": "Checking the requested stack tag and size"}]
        catalog = await self.catalog_source().get()
        try:
            choice = validate_options(
                options, catalog, self.cfg.sizes, default_size=self.cfg.stack.default_size,
                restriction=await self.restriction(),
            )
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        if choice.entry.present:
            try:
                await self.docker("inspect_image", choice.entry.image)
            except docker.errors.ImageNotFound:
                self.catalog_source().invalidate()
                fresh = await self.catalog_source().get()
                raise web.HTTPError(
                    400, f"the image of image_tag {choice.entry.name!r} is gone; allowed: {', '.join(fresh.names())}"
                ) from None
        self.apply_spec(build_server_spec(self.cfg, self.user.name, self.name or "", choice))

    def apply_spec(self, spec: ServerSpec):
        """Hand a built spec to DockerSpawner's traits (``objects.spawner_traits``); what the hub's
        config already put in the merged traits (environment, create and host config) stays."""
        self.server_spec = spec
        for name, value in objects.spawner_traits(spec).items():
            if name in ("environment", "extra_create_kwargs", "extra_host_config"):
                value = {**getattr(self, name), **value}
            setattr(self, name, value)

    # -- only ever this user's own server ----------------------------------------------------

    def _is_mine(self, obj: dict) -> bool:
        labels = (obj.get("Config") or {}).get("Labels") or {}
        return (labels.get(names.LABEL_ROLE) == "server" and labels.get(names.LABEL_USER) == self.user.name
                and labels.get(names.LABEL_DEPLOYMENT, names.PREFIX) == self.cfg.hub.prefix
                and labels.get(names.LABEL_SERVER, "") == (self.name or ""))

    async def get_object(self):
        """DockerSpawner's lookup by name, but a container that is not this user's server is not ours.

        Its labels must say role=server and this user and server name; anything else (an
        infrastructure container, another user's server) is never started, stopped or removed.
        """
        obj = await super().get_object()
        if obj is not None and not self._is_mine(obj):
            self.log.error("stackhub: container %s is not %s's server %r (labels %s); leaving it alone",
                           self.object_name, self.user.name, self.name or "",
                           (obj.get("Config") or {}).get("Labels"))
            self.object_id = ""
            return None
        return obj

    async def stop(self, now=False):
        if not self.object_id:  # nothing of ours to stop (never created, or not ours)
            self.clear_state()
            return
        await super().stop(now=now)

    # -- start, with progress ------------------------------------------------------------------

    def _event(self, progress: int, message: str):
        self._progress_events.append({"progress": progress, "message": message})

    async def ensure_volumes(self, spec: ServerSpec):
        """Create the home volume with labels (idempotent), so operators can find it by user."""
        self._event(20, f"Preparing home volume {spec.home_volume}")
        await self.docker(
            "create_volume", name=spec.home_volume,
            labels={**names.Deployment(self.cfg.hub.prefix).labels("home"), names.LABEL_USER: self.user.name},
        )

    async def create_object(self):
        """DockerSpawner's create; a name held by a container that ``get_object`` found not ours
        makes the engine answer 409: that becomes a message, and the container is left alone."""
        try:
            return await super().create_object()
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
            raise web.HTTPError(409, f"a container named {self.object_name} exists and is not this server; "
                                     "the hub leaves it alone. Ask an admin to look at it.") from None

    async def start(self):
        spec = self.server_spec
        self._event(10, f"Image {spec.image}")
        await self.ensure_volumes(spec)
        gate = self.start_gate()
        if isinstance(gate, asyncio.Semaphore) and gate.locked():
            self._event(30, "Other servers are starting; yours starts in turn (each is ready sooner that way)")
        async with gate:
            self._event(40, f"Starting container {spec.name}")
            ip, port = await super().start()
            self._event(70, "Container started; waiting for JupyterLab to answer")
            await wait_until_listening(ip, port, timeout=self.http_timeout, alive=self._exit_status)
        return ip, port

    async def _exit_status(self):
        """None while the container runs; else why it stopped, with the end of its log."""
        status = await self.poll()
        if status is None:
            return None
        try:
            logs = await self.docker("logs", self.container_id, tail=15)
            tail = logs.decode(errors="replace").strip()
        except docker.errors.APIError:
            tail = ""
        return f"the server's container exited ({status}) before JupyterLab answered" + (f":\n{tail}" if tail else "")

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


async def wait_until_listening(host: str, port: int, *, timeout: float, alive, interval: float = 0.2,
                               check_every: float = 2.0):
    """Return as soon as ``host:port`` accepts a TCP connection.

    Why: after ``start()`` JupyterHub polls the server's HTTP API with jittered exponential backoff
    that grows to 5 s between tries, so a server that is up is noticed, on average, a second or
    more late (measured: 2.7 s after JupyterLab printed that it runs). Jupyter Server listens only
    when it is ready to serve, so a refused connect here is cheap (the bridge answers with a reset)
    and the hub's first HTTP check after this returns succeeds at once. Every ``check_every``
    seconds ``alive()`` is awaited: a container that died is reported with its reason at once,
    instead of after ``http_timeout``. After ``timeout`` this returns and JupyterHub's own check
    decides (and fails the spawn with its usual message).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_check = loop.time() + check_every
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)
        except (OSError, asyncio.TimeoutError):
            pass
        else:
            writer.close()
            return
        if loop.time() >= next_check:
            next_check = loop.time() + check_every
            why = await alive()
            if why:
                raise web.HTTPError(500, why)
        await asyncio.sleep(interval)
