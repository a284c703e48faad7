"""The Swarm backend's built objects: the service of a user's server, hub and proxy services, the engine."""

from __future__ import annotations

import pytest

from spawner.core.config import StackhubConfig
from spawner.core.options import validate_options
from spawner.core.specs import build_server_spec

NFS = {"spawner": {"backend": {
    "type": "swarm",
    "homeVolumeDriver": {"name": "local", "options": {"type": "nfs", "o": "addr=10.0.0.5,rw,nfsvers=4",
                                                      "device": ":/export/homes/{user}"}},
    "constraints": ["node.labels.stackhub==users"],
    "sizeConstraints": {"large": ["node.labels.big==true"]},
    "reservation": 0.5}}}


def built(catalog, cfg, user="ada", server="big-run", size="small", env=None):
    from spawner.backends.swarm.objects import service

    choice = validate_options({"image_tag": "w_2026_43", "size": size}, catalog, cfg.sizes, default_size="small")
    spec = build_server_spec(cfg, user, server, choice)
    return service(spec, cfg.spawner.backend, prefix=cfg.hub.prefix, env=env or spec.environment,
                   args=["stackhub-start"])


def test_swarm_service_for_a_user_golden(catalog, golden):
    """What Swarm is asked for, for one user's named server, homes on NFS."""
    golden("swarm_service_ada_named", built(catalog, StackhubConfig.model_validate(NFS)))


def test_home_on_the_configured_driver_per_user_data_and_courses_read_only(catalog):
    svc = built(catalog, StackhubConfig.model_validate(NFS), user="Jürgen.M")
    home, data, courses, tmp = svc["task_template"]["ContainerSpec"]["Mounts"]
    assert (home["Target"], home["ReadOnly"], home["Source"]) == ("/home", False, "stackhub-home--4A-C3-BCrgen-2E-4D")
    # the escaped name ([a-z0-9-] only) fills {user}: no username reaches another directory of the export
    assert home["VolumeOptions"]["DriverConfig"]["Options"]["device"] == ":/export/homes/-4A-C3-BCrgen-2E-4D"
    assert home["VolumeOptions"]["Labels"]["stackhub.user"] == "Jürgen.M"
    assert (data["Target"], data["ReadOnly"]) == ("/data", True) and courses["ReadOnly"] is True
    assert "DriverConfig" not in data["VolumeOptions"]  # no shared driver configured: node-local volumes
    assert tmp == {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 2**30, "Mode": 0o1777}}


def test_placement_and_resources_come_from_the_size(catalog):
    cfg = StackhubConfig.model_validate(NFS)
    small = built(catalog, cfg, size="small")["task_template"]
    large = built(catalog, cfg, size="large")["task_template"]
    assert small["Placement"]["Constraints"] == ["node.labels.stackhub==users"]
    assert large["Placement"]["Constraints"] == ["node.labels.stackhub==users", "node.labels.big==true"]
    assert large["Resources"]["Limits"]["NanoCPUs"] == 4 * 10**9 and large["Resources"]["Limits"]["MemoryBytes"] == 8 * 2**30
    assert large["Resources"]["Reservations"] == {"NanoCPUs": 2 * 10**9, "MemoryBytes": 4 * 2**30}
    none = StackhubConfig.model_validate({"spawner": {"backend": {"type": "swarm", "reservation": 0}}})
    assert built(catalog, none)["task_template"]["Resources"]["Reservations"] == {}


def test_the_hardening_swarm_carries(catalog):
    cfg = StackhubConfig.model_validate({"spawner": {"backend": "swarm", "pidsLimit": 300, "nofile": 1024}})
    task = built(catalog, cfg)["task_template"]
    c = task["ContainerSpec"]
    assert c["User"] == "1000" and c["ReadOnly"] is True and c["CapabilityDrop"] == ["ALL"]
    assert c["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]
    assert task["Resources"]["Limits"]["Pids"] == 300
    assert task["RestartPolicy"] == {"Condition": "none"}  # an exited server stays stopped, as on Docker


def test_the_service_and_its_containers_carry_the_deployment_labels(catalog):
    svc = built(catalog, StackhubConfig.model_validate({"hub": {"prefix": "other"}, "spawner": {"backend": "swarm"}}))
    for labels in (svc["labels"], svc["task_template"]["ContainerSpec"]["Labels"]):
        assert labels["stackhub.deployment"] == "other" and labels["stackhub.role"] == "server"
        assert labels["stackhub.user"] == "ada" and labels["stackhub.server"] == "big-run"
    assert svc["name"] == "other-user-ada--big-2Drun"


def test_hub_and_proxy_services_golden(golden, tmp_path):
    from spawner.deploy.single_host import HostPaths
    from spawner.deploy.swarm import hub_service, overlay_networks, proxy_service
    from spawner.deploy.tls import TLSFiles

    from tests.unit.test_specs import json_safe

    cfg = StackhubConfig.model_validate({"spawner": {"backend": "swarm"}})
    root = tmp_path / "state"
    paths = HostPaths(root)
    tls = TLSFiles(root / "tls/ca.pem", root / "tls/server.pem", root / "tls/server-key.pem")
    out = {"hub": hub_service(cfg, paths, None, {"X_FILE": "/srv/stackhub/secrets/env-x"}, node_id="NODE"),
           "proxy": proxy_service(cfg, paths, tls, node_id="NODE"), "networks": overlay_networks(cfg)}
    golden("deploy_swarm_hub_and_proxy", json_safe(out, {str(root): "<state>"}))
    proxy = out["proxy"]
    assert proxy["endpoint_spec"]["Mode"] == "dnsrr"
    assert {p["PublishedPort"] for p in proxy["endpoint_spec"]["Ports"]} == {8443, 8080}
    assert proxy["task_template"]["Networks"][1] == {"Target": "stackhub-internal", "Aliases": ["stackhub-proxy-api"]}
    assert out["networks"][1]["internal"] is True
    # the proxy token is read from its file, never passed in the environment
    assert not any("token" in e.lower() for e in proxy["task_template"]["ContainerSpec"]["Env"])


class FakeClient:
    """The manager's Docker client as the engine uses it: services and tasks, info, exec."""

    def __init__(self, node="N1"):
        self.node = node
        self.execs = []
        self.api = self
        self.containers = self

    def info(self):
        return {"Swarm": {"NodeID": self.node}}

    def services(self, filters):
        assert "stackhub.deployment=stackhub" in filters["label"]
        labels = {"stackhub.role": "server", "stackhub.deployment": "stackhub"}
        return [{"ID": "s1", "Spec": {"Name": "stackhub-user-ada", "Labels": {**labels, "stackhub.user": "ada"}}},
                {"ID": "s2", "Spec": {"Name": "stackhub-user-bo--x",
                                      "Labels": {**labels, "stackhub.user": "bo", "stackhub.server": "x"}}}]

    def tasks(self, filters):
        def task(service, node, container):
            return {"ServiceID": service, "NodeID": node,
                    "Status": {"State": "running", "ContainerStatus": {"ContainerID": container}}}
        return [task("s1", "N1", "c1"), task("s2", "N2", "c2"), task("zz", "N1", "c9")]

    def exec_create(self, *a, **kw):
        from tests.support.fake_exec import FakeExecAPI

        if not hasattr(self, "_exec"):
            self._exec = FakeExecAPI(lambda container, argv, user, env: (0, [(b"out", None)]))
            self._exec.execs = self.execs
        self.exec_start, self.exec_inspect = self._exec.exec_start, self._exec.exec_inspect
        return self._exec.exec_create(*a, **kw)


def test_engine_finds_running_servers_by_labels_and_execs_on_its_own_node_only():
    from spawner.backends import engine_for
    from spawner.backends.base import EngineError, ExecResult

    client = FakeClient()
    engine = engine_for(StackhubConfig.model_validate({"spawner": {"backend": "swarm"}}), client=client)
    running = engine.running_servers()
    assert set(running) == {"ada", "bo"}  # another deployment's task (service zz) is not among them
    assert engine.server("bo", "x").name == "stackhub-user-bo--x" and engine.server("bo") is None
    assert engine.exec(running["ada"], ["id"], user="1000") == ExecResult(0, b"out", b"")
    assert client.execs == [("c1", ["id"], "1000")]
    with pytest.raises(EngineError, match="not on the hub's"):
        engine.exec(running["bo"], ["id"], user="1000")


def test_hub_config_picks_the_swarm_spawner(tmp_path):
    from traitlets.config import Config

    from spawner.hub.apply import HubPaths, apply_config

    for name in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (tmp_path / name).write_text("x" * 40 + "\n")
    cfg = StackhubConfig.model_validate({"spawner": {"backend": {"type": "swarm", "workers": 5}}})
    c = apply_config(Config(), cfg, HubPaths(state=tmp_path, secrets=tmp_path))
    assert c.JupyterHub.spawner_class == "spawner.backends.swarm.spawner.LSSTSwarmSpawner"
    assert c.LSSTDockerSpawner.docker_workers == 5  # LSSTSwarmSpawner is an LSSTDockerSpawner
    assert c.StackhubSpawnerMixin.stackhub_config["spawner"]["backend"]["type"] == "swarm"


def test_the_swarm_spawner_class_builds_with_the_mixin_first():
    from spawner.backends.base import StackhubSpawnerMixin
    from spawner.backends.swarm.spawner import LSSTSwarmSpawner
    from dockerspawner import SwarmSpawner

    mro = LSSTSwarmSpawner.__mro__
    assert mro.index(StackhubSpawnerMixin) < mro.index(SwarmSpawner)
    assert LSSTSwarmSpawner.object_type == "service"
