"""The Swarm deployment: hub and proxy as Swarm services on the manager that runs ``stackhub up``.

``hub_service`` and ``proxy_service`` are pure: the single-host containers' specs (the same image,
command, environment and files) turned into ``create_service`` keyword arguments in the Engine
API's shape. Both are pinned to this node (``node.id``): their state, secrets and TLS files are
this node's files, bind-mounted as on one host. The users' network and the hub-only API network are
overlay networks, so user servers on any node reach the hub and the proxy reaches them.
``SwarmDeployment`` does the I/O; ``stackhub up --backend swarm`` (or ``spawner.backend.type:
swarm``) selects it. docs/swarm.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from spawner.core import names
from spawner.core.config import StackhubConfig, memory_bytes
from spawner.deploy.single_host import (Deployment, HostPaths, ensure_secrets, hub_container, proxy_container,
                                        secret_environment, tls_files)
from spawner.deploy.tls import TLSFiles


def mount(volume: str) -> dict:
    """A ``source:target:mode`` volume string as a service mount (host paths bind, names volume)."""
    source, target, mode = volume.rsplit(":", 2)
    return {"Type": "bind" if source.startswith("/") else "volume", "Source": source, "Target": target,
            "ReadOnly": mode == "ro"}


def _service(container: dict, *, node_id: str, networks: list[dict], ports: list[dict]) -> dict:
    env = container.get("environment") or {}
    spec = {"Image": container["image"], "Labels": dict(container["labels"]),
            "Mounts": [mount(v) for v in container.get("volumes", [])],
            "Env": [f"{k}={v}" for k, v in sorted(env.items())]}
    if container.get("command"):
        spec["Command"] = list(container["command"])
    if container.get("working_dir"):
        spec["Dir"] = container["working_dir"]
    task = {"ContainerSpec": spec,
            "RestartPolicy": {"Condition": "on-failure", "Delay": 5 * 10**9, "MaxAttempts": 3},
            "Placement": {"Constraints": [f"node.id=={node_id}"]},
            "Networks": networks}
    if container.get("mem_limit"):
        task["Resources"] = {"Limits": {"MemoryBytes": memory_bytes(container["mem_limit"])}}
    if container.get("log_config"):
        log = container["log_config"]
        task["LogDriver"] = {"Name": log["type"], "Options": dict(log["config"])}
    # dnsrr: a name resolves to the task's own address (the proxy binds its API to its alias's)
    endpoint = {"Mode": "dnsrr", "Ports": ports}
    return {"name": container["name"], "labels": dict(container["labels"]), "task_template": task,
            "endpoint_spec": endpoint}


def proxy_service(cfg: StackhubConfig, paths: HostPaths, tls: TLSFiles, *, node_id: str) -> dict:
    """The proxy: TLS, the public ports published on this node (host mode), its API on the hub-only
    network under its alias there."""
    container = proxy_container(cfg, paths, tls)
    ports = [{"Protocol": "tcp", "TargetPort": int(target.split("/")[0]), "PublishedPort": published,
              "PublishMode": "host"} for target, (_, published) in sorted(container["ports"].items())]
    own = names.Deployment(cfg.hub.prefix)
    networks = [{"Target": cfg.hub.network}, {"Target": cfg.hub.api_network, "Aliases": [own.proxy_api]}]
    return _service(container, node_id=node_id, networks=networks, ports=ports)


def hub_service(cfg: StackhubConfig, paths: HostPaths, config_file: Path | None, environment: dict | None,
                *, node_id: str) -> dict:
    """The hub (and its managed services): the Docker socket of this manager, its state volume,
    secrets and config file, on both networks."""
    container = hub_container(cfg, paths, config_file, environment)
    networks = [{"Target": cfg.hub.network}, {"Target": cfg.hub.api_network}]
    return _service(container, node_id=node_id, networks=networks, ports=[])


def overlay_networks(cfg: StackhubConfig) -> list[dict]:
    """The users' overlay network and the internal (no way out) hub-only one, as ``networks.create``
    keywords. Overlay networks have no ``enable_icc`` switch: see docs/swarm.md on isolation."""
    labels = names.Deployment(cfg.hub.prefix).labels("network")
    encrypted = getattr(cfg.spawner.backend, "encrypted_network", False)
    options = {"encrypted": "true"} if encrypted else {}
    return [
        {"name": cfg.hub.network, "driver": "overlay", "options": options, "labels": labels, "internal": False,
         "attachable": False},
        {"name": cfg.hub.api_network, "driver": "overlay", "options": options, "labels": labels, "internal": True,
         "attachable": False},
    ]


class SwarmDeployment(Deployment):
    """I/O of the Swarm deployment, on a ``docker.DockerClient`` of a manager node."""

    logs_command = "docker service logs"

    def node_id(self) -> str:
        swarm = self.client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise RuntimeError("this Docker engine is not a Swarm manager: run `docker swarm init` "
                               "(or join it to your swarm as a manager), then `stackhub up` again (docs/swarm.md)")
        return swarm["NodeID"]

    def servers(self, all: bool = False) -> list:
        """This deployment's user server services (``all`` makes no difference: a service is a service)."""
        filters = {"label": [f"{names.LABEL_ROLE}=server", f"{names.LABEL_DEPLOYMENT}={self.cfg.hub.prefix}"]}
        return self.client.services.list(filters=filters)

    def _service(self, name: str):
        return next((s for s in self.client.services.list(filters={"name": name}) if s.name == name), None)

    def _remove_service(self, name: str):
        service = self._service(name)
        if service is not None:
            service.remove()

    def _ensure_networks(self):
        for spec in overlay_networks(self.cfg):
            net = self._network(spec["name"])
            if net is not None:
                if net.attrs.get("Driver") != "overlay":
                    raise RuntimeError(f"Docker network {spec['name']} exists with driver {net.attrs.get('Driver')}, "
                                       "not overlay: another deployment uses it; give this one its own "
                                       "hub.network and hub.apiNetwork")
                continue
            self.client.networks.create(**spec)

    def _wait_gone(self, names_: list[str], timeout: float = 30):
        """A removed service's task container takes a moment to go; its ports and name free then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # the plain list (no inspect of each): a container that goes meanwhile is no error
            found = self.client.api.containers(all=True, filters={"label": f"{names.LABEL_DEPLOYMENT}={self.cfg.hub.prefix}"})
            left = [c for c in found if (c.get("Labels") or {}).get("com.docker.swarm.service.name") in names_]
            if not left:
                return
            time.sleep(0.5)

    def up(self, environment: dict | None = None) -> TLSFiles:
        """Start (or restart) the proxy and hub services; user servers keep running across it."""
        self.log("[1/5] secrets and TLS certificate")
        node = self.node_id()
        ensure_secrets(self.paths)
        tls = tls_files(self.cfg, self.paths)
        self.log("[2/5] hub database (a backup before an upgrade)")
        self.backup_before_upgrade()
        self.log("[3/5] overlay networks and volumes")
        self._remove_service(self.own.proxy)
        self._remove_service(self.own.hub)
        self._wait_gone([self.own.proxy, self.own.hub])
        self._ensure_networks()
        if self.cfg.hub.state_volume.startswith("/"):
            Path(self.cfg.hub.state_volume).mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self._ensure_volume(self.cfg.hub.state_volume, "hub-state")
        if self.cfg.courses.enabled:
            self._ensure_volume(self.cfg.courses.volume, "courses")
        for m in self.cfg.volumes.data:
            if not m.source.startswith("/"):
                self._ensure_volume(m.source, "data")
        self.log("[4/5] proxy and hub services")
        self.client.api.create_service(**proxy_service(self.cfg, self.paths, tls, node_id=node))
        env = secret_environment(self.paths, environment)
        self.client.api.create_service(**hub_service(self.cfg, self.paths, self.config_file, env, node_id=node))
        self.log("no iptables rules on Swarm: the overlay networks are not firewalled by stackhub (docs/swarm.md)")
        self.log("[5/5] waiting for the hub to answer")
        self.wait_ready(tls)
        return tls

    def running_hub_image(self) -> tuple[str | None, str | None]:
        """(image ID, reference) of the hub service's image; (None, None) without a hub service."""
        from docker.errors import ImageNotFound

        service = self._service(self.own.hub)
        if service is None:
            return None, None
        ref = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        try:
            return self.client.images.get(ref).id, ref
        except ImageNotFound:  # removed since: certainly not the image about to start
            return ref, ref

    def stop_old_hub(self):
        """A service cannot be stopped: it is removed (``up`` starts it again anyway). Should the
        backup fail, ``up`` stops with the error and nothing restarts it: a second ``up`` does."""
        self.log(f"  removing the old hub service {self.own.hub} (user servers keep running)")
        self._remove_service(self.own.hub)
        self._wait_gone([self.own.hub])
        return None

    def check_hub_alive(self):
        service = self._service(self.own.hub)
        if service is None:
            raise RuntimeError(f"the hub service {self.own.hub} is gone")
        failed = [t for t in service.tasks() if t["Status"]["State"] in ("failed", "rejected", "complete")]
        if failed:
            err = failed[0]["Status"].get("Err") or failed[0]["Status"]["State"]
            try:
                log = b"".join(service.logs(stdout=True, stderr=True, tail=30)).decode(errors="replace")
            except Exception:  # noqa: BLE001 - the log is a help, the error is the message
                log = ""
            service.remove()
            raise RuntimeError(f"the hub service's task stopped ({err}); its log ends:\n{log}")

    def down(self):
        """Remove the hub, proxy and user server services; homes, data and hub state stay."""
        for s in self.servers():
            self.log(f"stopping {s.name}")
            s.remove()
        for name in (self.own.hub, self.own.proxy):
            self._remove_service(name)
        self._wait_gone([s for s in (self.own.hub, self.own.proxy)])
        self.log("removed the hub and proxy services; homes, data and hub state are kept")


def deployment_for(cfg: StackhubConfig):
    """The deployment class of the configured backend."""
    return SwarmDeployment if cfg.spawner.backend.type == "swarm" else Deployment
