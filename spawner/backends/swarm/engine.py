"""The Engine of the Swarm backend (``spawner.backends.base.Engine``): what the hub's services
(courses, sessions, diskwatch) ask of user servers when they run as Swarm services.

A server is a service labelled with this deployment, role ``server``, its user and server name;
its running task's container is where a command runs. Everything else (the catalog of the
manager's images, volume sizes, the courses fetch's throwaway container, the hub's own image) is
the manager's Docker engine, as on one host: ``DockerEngine``'s. The Docker API of a manager runs
``exec`` only in containers of its own node: a task on another node cannot be reached from the hub
and ``exec`` says so (that user's courses still sync when the server starts; docs/swarm.md).
"""

from __future__ import annotations

from spawner.backends.base import EXEC_MAX_BYTES, EXEC_TIMEOUT, EngineError, ExecResult, RunningServer
from spawner.backends.docker.engine import DockerEngine, bounded_exec, engine_errors
from spawner.core import names
from spawner.core.config import StackhubConfig


class SwarmEngine(DockerEngine):
    """This deployment's user servers as Swarm services, through a manager's API."""

    _node: str | None = None

    def this_node(self) -> str:
        if self._node is None:
            self._node = self.client.info()["Swarm"]["NodeID"]
        return self._node

    def _running(self, user: str | None = None) -> list[RunningServer]:
        label = [f"{names.LABEL_ROLE}=server", f"{names.LABEL_DEPLOYMENT}={self.cfg.hub.prefix}"]
        if user is not None:
            label.append(f"{names.LABEL_USER}={user}")
        with engine_errors():
            services = {s["ID"]: s for s in self.client.api.services(filters={"label": label})}
            tasks = self.client.api.tasks(filters={"desired-state": "running"}) if services else []
        out = []
        for task in tasks:
            service = services.get(task.get("ServiceID"))
            status = task.get("Status") or {}
            container = (status.get("ContainerStatus") or {}).get("ContainerID")
            if service is None or status.get("State") != "running" or not container:
                continue
            labels = service["Spec"].get("Labels") or {}
            if not self.deployment.owns_server(labels):
                continue
            out.append(RunningServer(user=labels[names.LABEL_USER], server=labels.get(names.LABEL_SERVER, ""),
                                     name=service["Spec"]["Name"], ref=(container, task.get("NodeID", ""))))
        return out

    def running_servers(self) -> dict[str, RunningServer]:
        """username -> one running server (the default one first: all share the one home)."""
        out: dict[str, RunningServer] = {}
        for h in self._running():
            if h.user not in out or not h.server:
                out[h.user] = h
        return out

    def server(self, user: str, server: str = "") -> RunningServer | None:
        return next((h for h in self._running(user) if h.user == user and h.server == (server or "")), None)

    def exec(self, handle: RunningServer, argv, *, user: str, environment: dict | None = None,
             timeout: float = EXEC_TIMEOUT, max_bytes: int = EXEC_MAX_BYTES) -> ExecResult:
        """Run ``argv`` as ``user`` in the server's task container, if it is on this manager's node."""
        container, node = handle.ref
        if node and node != self.this_node():
            raise EngineError(f"{handle.name} runs on node {node[:12]}, not on the hub's; "
                              "the hub can only run commands in servers on its own node")
        return bounded_exec(self.client.api, container, argv, user=user, environment=environment, timeout=timeout,
                            max_bytes=max_bytes)


def make_engine(cfg: StackhubConfig, **kw) -> SwarmEngine:
    return SwarmEngine(cfg, **kw)
