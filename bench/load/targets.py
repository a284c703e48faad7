"""The two deployments a load run compares, on the same engine, each under names of its own.

- ``StackhubTarget``: stackhub's own ``Deployment`` (what ``make up`` runs), prefix ``stackhub-bench``,
  ports 11443/11080, the checkout's hub image, tutorial login (room code + a password of one's own).
- ``StockTarget``: plain JupyterHub (the version stackhub pins) with stock DockerSpawner, set up the way
  a site admin would from the two projects' docs: first-use password login, an image menu of the same
  stack tags, a home volume per user, a user-defined bridge network, the hub starting
  configurable-http-proxy itself, TLS with the same certificate, the same spawn timeouts. It runs in a
  container of the same hub image (so the same JupyterHub, DockerSpawner and CHP), as
  ``stackhub-bench-stock-hub`` on port 11543.

Everything either creates carries the label ``stackhub.bench=<target>`` or a ``stackhub-bench`` name
(the stackhub deployment labels its own objects ``stackhub.deployment=stackhub-bench``), and
``down()`` removes exactly that.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import quote

import docker
import requests
import yaml

from bench.load.attendee import Endpoint
from spawner.core import names
from spawner.hub.origins import server_origin

PREFIX = "stackhub-bench"
STOCK = f"{PREFIX}-stock"
BENCH_LABEL = "stackhub.bench"


def _api(url: str, token: str, ca: str, method: str, path: str, **kw):
    kw.setdefault("timeout", 60)
    return requests.request(method, f"{url}hub/api{path}", headers={"Authorization": f"token {token}"},
                            verify=ca, **kw)


class Target:
    """What the driver needs from a deployment."""

    name: str
    endpoint: Endpoint
    token: str

    def api(self, method, path, **kw):
        return _api(self.endpoint.url, self.token, self.endpoint.ca, method, path, **kw)

    def hub_containers(self) -> dict:
        """Role -> container name whose cgroup the monitor reads ("hub", and "proxy" when separate)."""
        raise NotImplementedError

    def server_container(self, user: str) -> str:
        raise NotImplementedError

    def remove_users(self, users):
        """Stop leftovers and delete the round's users, then their home volumes."""
        for u in users:
            q = quote(u, safe="")
            self.api("DELETE", f"/users/{q}/server")
        deadline = time.monotonic() + 180
        for u in users:
            q = quote(u, safe="")
            while time.monotonic() < deadline:
                r = self.api("GET", f"/users/{q}")
                if r.status_code == 404 or not (r.json().get("servers") or r.json().get("pending")):
                    break
                time.sleep(0.5)
            self.api("DELETE", f"/users/{q}")
        self._remove_homes(users)
        for u in users:  # the homes are gone: the next round may claim the names again
            self.api("POST", f"/stackhub/users/{quote(u, safe='')}/release")

    def _remove_homes(self, users):
        raise NotImplementedError


class Prewarm:
    """An admin's pre-warm before a round, through stackhub's sessions service (stackhub targets only:
    stock JupyterHub has none). Needs the target's ``api``, ``endpoint``, ``token`` and ``size``."""

    PREWARM_GROUP = "bench-prewarm"

    def prewarm(self, users, tag: str, concurrency: int | None, log) -> dict:
        """Pre-warm the attendees' servers the way an admin does before a class: the users and their
        group exist (created unclaimed, so each attendee still claims their name with the room code),
        then one start job of the sessions service, followed until done. Returns its seconds and counts."""
        from spawner.cli.client import SESSIONS_SERVICE, Client

        for u in users:
            r = self.api("POST", f"/users/{quote(u, safe='')}")
            if r.status_code not in (201, 409):
                raise SystemExit(f"pre-warm: creating {u}: HTTP {r.status_code} {r.text[:200]}")
        g = quote(self.PREWARM_GROUP, safe="")
        r = self.api("POST", f"/groups/{g}")
        if r.status_code not in (201, 409):
            raise SystemExit(f"pre-warm: creating group {self.PREWARM_GROUP}: HTTP {r.status_code} {r.text[:200]}")
        r = self.api("POST", f"/groups/{g}/users", json={"users": list(users)})
        if r.status_code != 200:
            raise SystemExit(f"pre-warm: filling group {self.PREWARM_GROUP}: HTTP {r.status_code} {r.text[:200]}")
        api = Client(self.endpoint.url, self.token, self.endpoint.ca, service=SESSIONS_SERVICE)
        body = {"action": "start", "group": self.PREWARM_GROUP, "tag": tag, "size": self.size}
        if concurrency:
            body["concurrency"] = concurrency
        job = api("POST", "jobs", body)
        shown = 0
        while not job["done"]:
            time.sleep(2)
            job = api("GET", f"jobs/{job['id']}")
            ready = sum(1 for row in job["users"] if row["state"] in ("ready", "running"))
            if ready != shown:
                log(f"{ready}/{job['total']} ready after {job['seconds']} s")
                shown = ready
        for row in job["users"]:
            if row["state"] == "failed":
                log(f"FAILED {row['user']}: {row.get('message')}")
        log(f"done in {job['seconds']} s: {job['counts']}")
        return {"seconds": job["seconds"], "counts": job["counts"], "concurrency": job["concurrency"]}

    def remove_prewarm_group(self):
        self.api("DELETE", f"/groups/{quote(self.PREWARM_GROUP, safe='')}")


class StackhubTarget(Prewarm, Target):
    name = "stackhub"
    https_port, http_port = 11443, 11080

    def __init__(self, client: docker.DockerClient, state: Path, hub_image: str, size: str = "small",
                 subdomains: bool = True):
        self.client, self.state, self.hub_image, self.size = client, state.resolve(), hub_image, size
        self.subdomains = subdomains
        self.own = names.Deployment(PREFIX)
        self.deployment = None

    def config(self) -> dict:
        return {
            "hub": {"prefix": PREFIX, "httpsPort": self.https_port, "httpPort": self.http_port,
                    "network": f"{PREFIX}-users", "apiNetwork": f"{PREFIX}-internal",
                    "stateVolume": f"{PREFIX}-hub-state", "image": self.hub_image, "adminUsers": ["admin"],
                    "subdomains": self.subdomains},
            # every simulated attendee comes from this one address, as a room behind one NAT does
            "auth": {"type": "shared-password", "loginThrottle": {"claimsPerAddressPerHour": 1000}},
            "volumes": {"data": [{"source": f"{PREFIX}-data", "target": "/data"}],
                        "homeVolume": f"{PREFIX}-home-{{user}}"},
            "courses": {"volume": f"{PREFIX}-courses"},
        }

    def up(self) -> Endpoint:
        from spawner.core.config import load_config
        from spawner.deploy.single_host import Deployment, HostPaths

        self.state.mkdir(parents=True, exist_ok=True)
        config_file = self.state / "stackhub.yaml"
        config_file.write_text(yaml.safe_dump(self.config()))
        paths = HostPaths(self.state / "var")
        self.deployment = Deployment(client=self.client, cfg=load_config(config_file), paths=paths,
                                     config_file=config_file, log=lambda m: None)
        tls = self.deployment.up()
        self.tls = tls
        self.token = (paths.secrets / "admin-token").read_text().strip()
        room = (paths.secrets / "shared-password").read_text().strip()
        hub = self.deployment.cfg.hub
        self.endpoint = Endpoint(name=self.name, url=f"https://localhost:{self.https_port}/", ca=str(tls.ca),
                                 tag_field="image_tag", login_extra={"otp": room}, form_extra={"size": self.size},
                                 server_origin=lambda user: server_origin(hub, user))
        return self.endpoint

    def hub_containers(self) -> dict:
        return {"hub": self.own.hub, "proxy": self.own.proxy}

    def server_container(self, user: str) -> str:
        return self.own.server(user)

    def _remove_homes(self, users):
        for v in self.client.volumes.list(filters={"label": [f"{names.LABEL_DEPLOYMENT}={PREFIX}",
                                                             f"{names.LABEL_ROLE}=home"]}):
            if (v.attrs.get("Labels") or {}).get(names.LABEL_USER) in set(users):
                v.remove(force=True)

    def down(self):
        if self.deployment is None:
            from spawner.core.config import load_config
            from spawner.deploy.single_host import Deployment, HostPaths

            self.state.mkdir(parents=True, exist_ok=True)
            config_file = self.state / "stackhub.yaml"
            config_file.write_text(yaml.safe_dump(self.config()))
            self.deployment = Deployment(client=self.client, cfg=load_config(config_file),
                                         paths=HostPaths(self.state / "var"), config_file=config_file,
                                         log=lambda m: None)
        self.deployment.down()
        for v in self.client.volumes.list(filters={"label": f"{names.LABEL_DEPLOYMENT}={PREFIX}"}):
            v.remove(force=True)
        for net in (f"{PREFIX}-users", f"{PREFIX}-internal"):
            for n in self.client.networks.list(names=[net]):
                if n.name == net:
                    n.remove()


STOCK_CONFIG = '''\
# Stock JupyterHub + DockerSpawner, as a site admin sets it up from the two projects' docs.
# Written by bench/load/targets.py for the side-by-side load run; nothing of stackhub is imported.
c = get_config()  # noqa
c.JupyterHub.bind_url = "https://:8000"
c.JupyterHub.ssl_cert = "/srv/bench/tls/cert.pem"
c.JupyterHub.ssl_key = "/srv/bench/tls/key.pem"
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = {hub!r}
c.JupyterHub.db_url = "sqlite:////srv/state/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/state/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "firstuseauthenticator.FirstUseAuthenticator"
c.FirstUseAuthenticator.dbm_path = "/srv/state/passwords.dbm"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.allowed_images = {images!r}
c.DockerSpawner.network_name = {network!r}
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.name_template = {name_template!r}
c.DockerSpawner.volumes = {{{home!r}: "/home"}}  # the image owns /home; HOME is /home/lsst
c.DockerSpawner.remove = True
c.DockerSpawner.extra_create_kwargs = {{"labels": {{{label!r}: "stock"}}}}
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.Spawner.default_url = "/lab"
c.JupyterHub.services = [{{"name": "bench", "api_token": open("/srv/bench/token").read().strip()}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
'''


class StockTarget(Target):
    name = "stock"
    port = 11543

    def __init__(self, client: docker.DockerClient, state: Path, hub_image: str, tags: list[str], tls):
        self.client, self.state, self.hub_image, self.tags, self.tls = client, state.resolve(), hub_image, tags, tls
        self.hub = f"{STOCK}-hub"

    def _labels(self):
        return {BENCH_LABEL: "stock"}

    def up(self) -> Endpoint:
        self.state.mkdir(parents=True, exist_ok=True)
        token_file = self.state / "token"
        if not token_file.exists():
            token_file.touch(mode=0o600)
            token_file.write_text(secrets.token_hex(32) + "\n")
        self.token = token_file.read_text().strip()
        config = self.state / "jupyterhub_config.py"
        config.write_text(stock_config_text(self.hub, self.tags))
        self.down()  # a fresh hub database per bench session
        self.client.networks.create(STOCK, driver="bridge", labels=self._labels())
        self.client.volumes.create(f"{STOCK}-state", labels=self._labels())
        self.client.containers.run(
            self.hub_image, ["jupyterhub", "-f", "/srv/bench/jupyterhub_config.py"], name=self.hub, detach=True,
            labels=self._labels(), network=STOCK, working_dir="/srv/state",
            ports={"8000/tcp": ("127.0.0.1", self.port)},
            volumes=["/var/run/docker.sock:/var/run/docker.sock:rw", f"{STOCK}-state:/srv/state:rw",
                     f"{config.resolve()}:/srv/bench/jupyterhub_config.py:ro",
                     f"{token_file.resolve()}:/srv/bench/token:ro",
                     f"{Path(self.tls.cert).resolve()}:/srv/bench/tls/cert.pem:ro",
                     f"{Path(self.tls.key).resolve()}:/srv/bench/tls/key.pem:ro"])
        self.endpoint = Endpoint(name=self.name, url=f"https://localhost:{self.port}/", ca=str(self.tls.ca),
                                 tag_field="image")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.api("GET", "/", timeout=5).status_code == 200:
                    return self.endpoint
            except requests.RequestException:
                pass
            c = self.client.containers.get(self.hub)
            if c.status == "exited":
                raise RuntimeError(f"stock hub exited: {c.logs(tail=30).decode(errors='replace')}")
            time.sleep(0.5)
        raise RuntimeError(f"stock hub not answering on {self.endpoint.url} in 120 s")

    def hub_containers(self) -> dict:
        return {"hub": self.hub}  # CHP runs inside, started by the hub (stock default)

    def server_container(self, user: str) -> str:
        return f"{STOCK}-{user}"

    def _remove_homes(self, users):
        for u in users:
            try:
                self.client.volumes.get(f"{STOCK}-home-{u}").remove(force=True)
            except docker.errors.NotFound:
                pass

    def down(self):
        """Remove the stock hub, its servers, homes, state volume and network (and nothing else)."""
        for c in self.client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}=stock"}):
            c.remove(force=True)
        for v in self.client.volumes.list():
            if v.name.startswith(f"{STOCK}-home-") or v.name == f"{STOCK}-state":
                v.remove(force=True)
        for n in self.client.networks.list(names=[STOCK]):
            if n.name == STOCK:
                n.remove()


def stock_config_text(hub: str, tags: list[str]) -> str:
    """The stock hub's jupyterhub_config.py (for the results page and the unit test)."""
    return STOCK_CONFIG.format(
        hub=hub, network=STOCK, name_template=f"{STOCK}-{{username}}", home=f"{STOCK}-home-{{username}}",
        images={t: f"stackhub/lsst-stack:{t}" for t in tags}, label=BENCH_LABEL)
