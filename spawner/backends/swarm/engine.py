"""The Engine of the Swarm backend: what the hub's services (courses, sessions, diskwatch) ask of
user servers when they run as Swarm services.

A server is a service labelled with this deployment (``stackhub.deployment``), role ``server``,
its user and server name; its running task's container is where a command is run. The Docker API
of a manager runs ``exec`` only in containers of its own node: a task on another node cannot be
reached from the hub and ``exec`` says so (its user's courses still sync when that server starts;
docs/swarm.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from spawner.backends.catalog_source import CatalogSource
from spawner.core import names
from spawner.core.config import StackhubConfig


class EngineError(RuntimeError):
    """An engine call that cannot be done (a task on another node, a server gone)."""


@dataclass(frozen=True)
class ServerHandle:
    """One running server: its service, the task's container and the node that runs it."""

    user: str
    server: str
    service: str
    container_id: str
    node: str


class SwarmEngine:
    """Reads and runs things in one deployment's user servers on a Swarm, through a manager's API."""

    def __init__(self, *, cfg: StackhubConfig, client=None, executor=None):
        if client is None:
            import docker

            client = docker.APIClient(version="auto")
        self.cfg = cfg
        self.client = client
        self.executor = executor
        self._node: str | None = None
        self._catalog: CatalogSource | None = None

    def catalog_source(self) -> CatalogSource:
        """Stack tags from the manager's images (and the registry, if one is configured)."""
        if self._catalog is None:
            stack = self.cfg.stack
            self._catalog = CatalogSource(client=self.client, repository=stack.repository,
                                          recommended=stack.recommended, ttl=stack.catalog_ttl,
                                          registry=stack.registry, executor=self.executor)
        return self._catalog

    def _this_node(self) -> str:
        if self._node is None:
            self._node = self.client.info()["Swarm"]["NodeID"]
        return self._node

    def _handles(self) -> list[ServerHandle]:
        filters = {"label": [f"{names.LABEL_ROLE}=server", f"{names.LABEL_DEPLOYMENT}={self.cfg.hub.prefix}"]}
        services = {s["ID"]: s for s in self.client.services(filters=filters)}
        if not services:
            return []
        out = []
        for task in self.client.tasks(filters={"desired-state": "running"}):
            service = services.get(task.get("ServiceID"))
            status = task.get("Status") or {}
            container = (status.get("ContainerStatus") or {}).get("ContainerID")
            if service is None or status.get("State") != "running" or not container:
                continue
            labels = service["Spec"].get("Labels") or {}
            out.append(ServerHandle(user=labels.get(names.LABEL_USER, ""), server=labels.get(names.LABEL_SERVER, ""),
                                    service=service["Spec"]["Name"], container_id=container, node=task.get("NodeID", "")))
        return out

    def running_servers(self) -> dict[str, ServerHandle]:
        """username -> one running server (its default server first: all share the one home)."""
        out: dict[str, ServerHandle] = {}
        for h in self._handles():
            if h.user and (h.user not in out or not h.server):
                out[h.user] = h
        return out

    def server(self, user: str, server: str = "") -> ServerHandle | None:
        return next((h for h in self._handles() if h.user == user and h.server == server), None)

    def exec(self, handle: ServerHandle, argv: list[str], *, user: str, environment: dict | None = None,
             timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """Run ``argv`` as ``user`` in the server's task container; ``timeout`` wraps it in
        ``timeout -s KILL`` inside the container (the API has no deadline of its own)."""
        if handle.node and handle.node != self._this_node():
            raise EngineError(f"{handle.service} runs on node {handle.node[:12]}, not on this manager; "
                              "the hub can only run commands in servers on its own node")
        if timeout is not None:
            argv = ["timeout", "-s", "KILL", f"{timeout:g}", *argv]
        created = self.client.exec_create(handle.container_id, argv, user=user, environment=environment)
        stdout, stderr = self.client.exec_start(created["Id"], demux=True)
        code = self.client.exec_inspect(created["Id"])["ExitCode"]
        return code, stdout or b"", stderr or b""

    def volume_usage(self) -> dict[str, int]:
        """Home volume name -> bytes, of the volumes on the manager's node (the engine's ``df``);
        homes on a network volume driver are measured wherever the driver reports them."""
        df = self.client.df()
        return {v["Name"]: (v.get("UsageData") or {}).get("Size", -1) for v in df.get("Volumes") or []
                if (v.get("Labels") or {}).get(names.LABEL_DEPLOYMENT) == self.cfg.hub.prefix
                and (v.get("Labels") or {}).get(names.LABEL_ROLE) == "home"}

    def fetch_runner(self):
        """The courses fetch runs in a throwaway container on the hub's own node, as on Docker:
        the hub's engine client is the runner."""
        return self.client

    async def run(self, fn, *args, **kw):
        """``fn(*args, **kw)`` on the executor (services call the engine from their event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kw))
