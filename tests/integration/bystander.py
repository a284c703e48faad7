"""A second deployment beside the test one, as a tutorial's `make up` would be on a developer's
host: the test session starts it first (prefix ``stackhub-bystander``, its own ports, networks,
volumes and state directory), starts one user's server on it, and at the very end checks that the
whole suite changed nothing of it: the same hub, proxy and server containers, still running, the
server's route still in its proxy, the server still answering. Then it is taken down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import docker
import requests
import yaml

from spawner.core import names
from spawner.core.config import load_config
from spawner.deploy.single_host import Deployment, HostPaths
from spawner.hub.origins import server_origin

PREFIX = "stackhub-bystander"
USER = "tutorial-attendee"


@dataclass
class Bystander:
    deployment: Deployment
    url: str
    ca: str
    token: str

    def api(self, method, path, **kw):
        return requests.request(method, f"{self.url}hub/api{path}", headers={"Authorization": f"token {self.token}"},
                                verify=self.ca, timeout=30, **kw)

    def snapshot(self) -> dict:
        own = self.deployment.own
        # its own containers only: another one of the engine's may go between the list and its inspection
        mine = self.deployment.client.containers.list(all=True, filters={"label": f"{names.LABEL_DEPLOYMENT}={PREFIX}"})
        containers = {c.name: (c.id, c.status) for c in mine if c.name in (own.hub, own.proxy, own.server(USER))}
        routes = sorted(self.api("GET", "/proxy").json())
        return {"containers": containers, "routes": routes}

    def server_answers(self) -> bool:
        r = requests.get(f"{server_origin(self.deployment.cfg.hub, USER)}user/{USER}/api/status", headers={"Authorization": f"token {self.token}"},
                         verify=self.ca, timeout=30)
        return r.status_code == 200


def start_bystander(client: docker.DockerClient, tmp: Path, hub_image: str, stack_tag: str) -> Bystander:
    config = {
        "hub": {"prefix": PREFIX, "httpsPort": 10443, "httpPort": 10080, "network": f"{PREFIX}-users",
                "apiNetwork": f"{PREFIX}-internal", "stateVolume": f"{PREFIX}-hub-state", "image": hub_image},
        "volumes": {"data": [{"source": f"{PREFIX}-data", "target": "/data"}], "homeVolume": f"{PREFIX}-home-{{user}}",
                    "homeBudget": None, "demoData": False},
        "courses": {"volume": f"{PREFIX}-courses", "shipped": []},
        "culler": {"enabled": False},
    }
    config_file = tmp / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    paths = HostPaths(tmp / "var")
    dep = Deployment(client=client, cfg=load_config(config_file), paths=paths, config_file=config_file,
                     log=lambda m: None)
    tls = dep.up()
    b = Bystander(dep, "https://localhost:10443/", str(tls.ca), (paths.secrets / "admin-token").read_text().strip())
    assert b.api("POST", f"/users/{USER}").status_code in (201, 409)
    r = b.api("POST", f"/users/{USER}/server", json={"image_tag": stack_tag})
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 180
    while not (b.api("GET", f"/users/{USER}").json().get("servers", {}).get("", {}).get("ready")):
        assert time.monotonic() < deadline, "the bystander's server did not start"
        time.sleep(0.5)
    return b


def remove_bystander(b: Bystander):
    b.deployment.down()
    client = b.deployment.client
    for v in client.volumes.list(filters={"label": f"{names.LABEL_DEPLOYMENT}={PREFIX}"}):
        v.remove(force=True)
    for net in (f"{PREFIX}-users", f"{PREFIX}-internal"):
        for n in client.networks.list(names=[net]):
            if n.name == net:
                n.remove()
