"""``LSSTDockerSpawner``: DockerSpawner serving the LSST stack, one container per user server.

The form, the check of ``user_options`` and the progress events are every backend's
(``spawner.backends.base.StackhubSpawnerMixin``). What this class adds to DockerSpawner, and why:
- the spec becomes DockerSpawner's traits through the pure ``objects.spawner_traits``;
- the per-user home volume (labelled, shared by all named servers) is created with labels, so
  operators find it by user;
- a container is only ever this user's server: anything else under the name is left alone;
- Docker calls run on a pool of threads, not DockerSpawner's single thread, so a tutorial's burst
  of spawns runs side by side.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import docker
from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Integer, default

from spawner.backends.base import StackhubSpawnerMixin
from spawner.backends.catalog_source import CatalogSource
from spawner.backends.docker import objects
from spawner.core import names
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

    async def stop(self, now=False):
        if not self.object_id:  # nothing of ours to stop (never created, or not ours)
            self.clear_state()
            return
        await super().stop(now=now)

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
        self._event(40, f"Starting container {spec.name}")
        ip_port = await super().start()
        self._event(70, "Container started; waiting for JupyterLab to answer")
        return ip_port
