"""``LSSTSwarmSpawner``: dockerspawner's SwarmSpawner serving the LSST stack, one service per server.

The form, the check of ``user_options`` against the tag catalog and the progress events are every
backend's (``StackhubSpawnerMixin``); the Docker API parts (the thread pool that lets a burst run
side by side, the catalog of the engine's images, the image check, "only ever this user's own
object") are the Docker backend's, so this class is an ``LSSTDockerSpawner`` placed before
``SwarmSpawner``. What differs is what the engine is asked for: a Swarm service built by the pure
``objects.service`` from the same ``ServerSpec``, with the home on the configured volume driver,
placement and resources from the size, and the hardening Swarm can carry. SwarmSpawner does the
rest: the task's state, its address (the service's name on the users' overlay network), poll and
removal.
"""

from __future__ import annotations

import asyncio

import docker
from dockerspawner import SwarmSpawner
from tornado import web

from spawner.backends.docker.spawner import LSSTDockerSpawner
from spawner.backends.swarm import objects
from spawner.core.config import SwarmBackend
from spawner.core.specs import ServerSpec


class LSSTSwarmSpawner(LSSTDockerSpawner, SwarmSpawner):
    """User servers as Swarm services (``spawner.backend: {type: swarm}``)."""

    task_poll_interval = 0.25  # seconds between looks at a starting task (SwarmSpawner backs off from 1 s)

    @property
    def backend(self) -> SwarmBackend:
        backend = self.cfg.spawner.backend
        return backend if isinstance(backend, SwarmBackend) else SwarmBackend()

    def apply_spec(self, spec: ServerSpec):
        """Keep the spec for ``create_object``; set the traits JupyterHub and SwarmSpawner read
        (image, name, limits in the server's environment, the network it is reached on)."""
        self.server_spec = spec
        self.image = spec.image  # first: it re-renders object_name
        self.object_name = spec.name
        self.environment = {**self.environment, **spec.environment}
        self.cpu_limit = spec.cpu_limit
        self.mem_limit = spec.mem_limit
        self.network_name = spec.network

    def object_labels(self, obj: dict) -> dict:
        return (obj.get("Spec") or {}).get("Labels") or {}

    async def ensure_volumes(self, spec: ServerSpec):
        # the node that runs the task makes the volume from the mount's driver and labels
        self._event(20, f"Home volume {spec.home_volume} ({self.backend.home_volume_driver.name} driver)")

    async def create_object(self):
        spec = objects.service(self.server_spec, self.backend, prefix=self.cfg.hub.prefix,
                               env=self.get_env(), args=await self.get_command())
        try:
            service = await self.docker("create_service", **spec)
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
            raise web.HTTPError(409, f"a service named {self.object_name} exists and is not this server; "
                                     "the hub leaves it alone. Ask an admin to look at it.") from None
        self._event(50, f"Service {spec['name']} created; waiting for the scheduler to place its task")
        return service

    async def start_object(self):
        """Wait until the task runs (SwarmSpawner's states, polled at a steady short interval so a
        server that is ready in 2 s is not found 4 s later)."""
        waiting = {"new", "assigned", "accepted", "starting", "pending", "preparing", "ready"}
        while True:
            task = await self.get_task()
            if not task:
                raise RuntimeError(f"Service {self.service_name} has no task")
            status = task["Status"]
            state = status["State"].lower()
            if state == "running":
                return
            if state not in waiting:
                raise RuntimeError(f"Service {self.service_name} not running: {status.get('Err') or state}")
            await asyncio.sleep(self.task_poll_interval)
