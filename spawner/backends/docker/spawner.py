"""``LSSTDockerSpawner``: DockerSpawner serving the LSST stack, one container per user server.

The form, the check of ``user_options`` and the progress events are every backend's
(``spawner.backends.base.StackhubSpawnerMixin``). What this class adds to DockerSpawner, and why:
- the spec becomes DockerSpawner's traits through the pure ``objects.spawner_traits``;
- the per-user home volume (labelled, shared by all named servers) is created with labels, so
  operators find it by user;
- a container is only ever this user's server: anything else under the name is left alone;
- Docker calls run on a pool of threads, not DockerSpawner's single thread, so a tutorial's burst
  of spawns runs side by side; at most ``start_concurrency`` servers start at once, in arrival order;
- ``start()`` returns when the server listens (``wait_until_listening``), not when JupyterHub's
  backoff next polls it, and a container that died at start fails the spawn with its log.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import docker
from dockerspawner import DockerSpawner
from jupyterhub.utils import url_path_join, wait_for_http_server
from tornado import web
from traitlets import Integer, default

from spawner.backends.base import StackhubSpawnerMixin
from spawner.backends.catalog_source import CatalogSource
from spawner.backends.docker import objects
from spawner.core import exits, names
from spawner.core.config import DockerBackend
from spawner.core.specs import ServerSpec


class LSSTDockerSpawner(StackhubSpawnerMixin, DockerSpawner):
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

    def start_gate(self):
        """The semaphore all spawners of this hub take turns through (FIFO), or no gate at all."""
        return self.shared("start_gate", lambda: asyncio.Semaphore(self.start_concurrency)
                           if self.start_concurrency else contextlib.nullcontext())

    @property
    def executor(self):
        return self.shared("executor", lambda: ThreadPoolExecutor(self.docker_workers,
                                                                  thread_name_prefix="stackhub-docker"))

    @default("client_kwargs")
    def _default_client_kwargs(self):
        # one HTTP connection per worker, or the pool becomes the queue
        return {"max_pool_size": self.docker_workers}

    def make_catalog_source(self) -> CatalogSource:
        repository = self.cfg.stack.repository
        return CatalogSource(lambda: self.client.images(name=repository), self.cfg.stack, executor=self.executor)

    async def check_image(self, entry):
        try:
            await self.docker("inspect_image", entry.image)
        except docker.errors.ImageNotFound:
            await self.image_gone(entry)

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

    def apply_spec(self, spec: ServerSpec):
        """Hand a built spec to DockerSpawner's traits (``objects.spawner_traits``); what the hub's
        config already put in the merged traits (environment, create and host config) stays."""
        self.server_spec = spec
        for name, value in objects.spawner_traits(spec).items():
            if name in ("environment", "extra_create_kwargs", "extra_host_config"):
                value = {**getattr(self, name), **value}
            setattr(self, name, value)

    # -- only ever this user's own server ----------------------------------------------------

    def object_labels(self, obj: dict) -> dict:
        """The labels of an inspected engine object (a container's; a Swarm service keeps them elsewhere)."""
        return (obj.get("Config") or {}).get("Labels") or {}

    def _is_mine(self, obj: dict) -> bool:
        return names.Deployment(self.cfg.hub.prefix).is_server_of(self.object_labels(obj), self.user.name,
                                                                   self.name or "")

    async def get_object(self):
        """DockerSpawner's lookup by name, but a container that is not this user's server is not ours.

        Its labels must say role=server and this user and server name; anything else (an
        infrastructure container, another user's server) is never started, stopped or removed.
        """
        obj = await super().get_object()
        if obj is not None and not self._is_mine(obj):
            self.log.error("stackhub: %s %s is not %s's server %r (labels %s); leaving it alone", self.object_type,
                           self.object_name, self.user.name, self.name or "", self.object_labels(obj))
            self.object_id = ""
            return None
        return obj

    async def remove_object(self):
        """Remove the container even while it runs: at start, DockerSpawner removes a container
        left under the server's name (a hub killed mid-spawn forgets it), but without force a
        running one stays, and the create that follows fails with 409. Its anonymous volumes go
        with it; the home is a named volume and stays."""
        if self.object_type != "container":  # a Swarm service: SwarmSpawner's own removal
            return await super().remove_object()
        try:
            await self.docker("remove_container", self.object_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: a removal already in progress
                raise

    async def stop(self, now=False):
        if not self.object_id:  # nothing of ours to stop (never created, or not ours)
            self.clear_state()
            return
        await super().stop(now=now)

    async def delete_forever(self):
        """The user is being deleted (JupyterHub deletes the default server's spawner only with its
        user; a named server's removal leaves the home, which every server of the user shares).

        The home goes only if ``volumes.deleteHomeWithUser`` says so, and only a volume labelled as
        this user's home of this deployment; the hub's log says which, never silently."""
        if self.name:
            return
        volume = names.home_volume_name(self.user.name, self.cfg.volumes.home_volume)
        if not self.cfg.volumes.delete_home_with_user:
            self.log.warning("stackhub: user %s deleted; home volume %s kept (volumes.deleteHomeWithUser is false; "
                             "`stackhub users delete %s --purge` or `stackhub users prune` deletes it)",
                             self.user.name, volume, self.user.name)
            return
        try:
            labels = (await self.docker("inspect_volume", volume)).get("Labels") or {}
        except docker.errors.NotFound:
            self.log.warning("stackhub: user %s deleted; they had no home volume %s", self.user.name, volume)
            return
        own = names.Deployment(self.cfg.hub.prefix).labels("home")
        if any(labels.get(k) != v for k, v in own.items()) or labels.get(names.LABEL_USER) != self.user.name:
            self.log.error("stackhub: user %s deleted; volume %s is not their home of this deployment (labels %s): kept",
                           self.user.name, volume, labels)
            return
        try:
            await self.docker("remove_volume", volume)
        except docker.errors.APIError as e:
            self.log.error("stackhub: user %s deleted; home volume %s kept: %s", self.user.name, volume, e.explanation)
            return
        self.log.warning("stackhub: user %s deleted; home volume %s deleted (volumes.deleteHomeWithUser)",
                         self.user.name, volume)

    # -- start, with progress ------------------------------------------------------------------

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
        await self.wait_answering_or_dead((ip, port))
        self.last_exit = ""
        return ip, port

    async def wait_answering_or_dead(self, ip_port):
        """Wait until the server answers HTTP (JupyterHub's own ``wait_for_http_server``; right
        after ``wait_until_listening`` its first try usually does), watching the container meanwhile:
        one that listened and then died (out of memory while JupyterLab loads) fails the spawn at once
        with the reason and its last log lines, instead of a spinner until http_timeout."""
        if self.object_type != "container":  # a Swarm service: its task is watched by start_object
            return
        ip, port = ip_port
        url = f"http://{ip}:{port}" + url_path_join(self.server.base_url if self.server else "/", "api")
        answered = asyncio.ensure_future(wait_for_http_server(url, timeout=self.http_timeout))
        try:
            while not answered.done():
                message = await self._exit_status()
                if message:
                    raise web.HTTPError(503, message, reason="Server stopped at start")
                await asyncio.wait([answered], timeout=1)
            answered.result()
        finally:
            answered.cancel()

    async def _exit_status(self):
        """None while the container runs; else why it stopped (out of memory, a broken image: kept
        for the spawn page by ``record_exit``), and the dead container is removed."""
        if self.object_type != "container":  # a Swarm service: its task is watched by start_object
            return None
        obj = await self.docker("inspect_container", self.object_id)
        if obj["State"]["Running"]:
            return None
        message = await self.record_exit(obj)
        await self.remove_object()
        return message

    async def record_exit(self, obj: dict) -> str:
        """Keep why the container ended (``last_exit``: the spawn page shows it) and log it; the
        caller then removes the container (JupyterHub does not stop a server that is already dead)."""
        logs = await self.docker("logs", self.object_id, stdout=True, stderr=True, tail=exits.LOG_LINES)
        self.last_exit = exits.exit_message(obj["State"], (obj.get("HostConfig") or {}).get("Memory") or 0,
                                            self.cfg.sizes, logs.decode(errors="replace"))
        self.log.warning("stackhub: %s's server %r stopped: %s", self.user.name, self.name or "", self.last_exit)
        return self.last_exit

    async def poll(self):
        """DockerSpawner's poll; a container found stopped (killed for memory while running) leaves
        its reason for the spawn page."""
        status = await super().poll()
        if status not in (None, 0) and self.object_id and self.object_type == "container":
            try:
                await self.record_exit(await self.docker("inspect_container", self.object_id))
            except docker.errors.NotFound:
                return status
            await self.remove_object()
        return status


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
                raise web.HTTPError(503, why, reason="Server stopped at start")
        await asyncio.sleep(interval)
