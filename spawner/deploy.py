"""The single-host deployment: hub and proxy containers, built as plain data, then run.

``hub_container`` and ``proxy_container`` are pure: (config, host paths) -> keyword arguments of
``docker.client.containers.run``. ``Deployment`` does the I/O: network, volumes, secrets, TLS files,
containers, and waiting until the hub answers. ``make up`` / ``make down`` call it through the CLI.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import names
from .config import OAuthAuth, SharedPasswordAuth, StackhubConfig
from .hubconfig import HUB_COURSES, HUB_NAME, HUB_PORT, PROXY_API_PORT, PROXY_NAME
from .tls import TLSFiles, _write_private, ensure_local_tls

HUB_SECRETS = "/srv/stackhub/secrets"
HUB_STATE = "/srv/stackhub/state"
HUB_CONFIG = "/srv/stackhub/stackhub.yaml"
PROXY_TLS = "/srv/tls"
SECRET_NAMES = ("proxy-token", "admin-token", "shared-password", "admin-password")


@dataclass(frozen=True)
class HostPaths:
    """Where ``make up`` keeps things on the host (default: ``var/`` in the checkout)."""

    root: Path

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def tls(self) -> Path:
        return self.root / "tls"


def _bind(source, target, mode="ro") -> str:
    return f"{source}:{target}:{mode}"


def proxy_container(cfg: StackhubConfig, paths: HostPaths, tls: TLSFiles) -> dict:
    hub = cfg.hub
    chp = [
        "configurable-http-proxy", "--ip", "0.0.0.0", "--port", "8443",
        "--ssl-cert", f"{PROXY_TLS}/cert.pem", "--ssl-key", f"{PROXY_TLS}/key.pem",
        "--redirect-port", "8080", "--redirect-to", str(hub.https_port),
        "--api-ip", "0.0.0.0", "--api-port", str(PROXY_API_PORT),
        "--default-target", f"http://{HUB_NAME}:{HUB_PORT}",
        "--error-target", f"http://{HUB_NAME}:{HUB_PORT}/hub/error",
    ]
    # the token is read from its file inside the container: it never appears in `docker inspect`
    script = f'CONFIGPROXY_AUTH_TOKEN="$(cat {HUB_SECRETS}/proxy-token)" exec {shlex.join(chp)}'
    return dict(
        image=hub.image,
        name=PROXY_NAME,
        command=["sh", "-c", script],
        labels={names.LABEL_ROLE: "proxy"},
        network=hub.network,
        ports={"8443/tcp": (hub.bind_address, hub.https_port), "8080/tcp": (hub.bind_address, hub.http_port)},
        volumes=[
            _bind(paths.secrets / "proxy-token", f"{HUB_SECRETS}/proxy-token"),
            _bind(tls.cert, f"{PROXY_TLS}/cert.pem"),
            _bind(tls.key, f"{PROXY_TLS}/key.pem"),
        ],
        restart_policy={"Name": "unless-stopped"},
        detach=True,
    )


def _auth_files(cfg: StackhubConfig) -> list[Path]:
    auth = cfg.auth
    if isinstance(auth, SharedPasswordAuth):
        return [auth.password_file] if auth.password_file else []
    if isinstance(auth, OAuthAuth):
        return [p for p in (auth.client_secret_file, auth.ca_file) if p]
    return []


def hub_container(cfg: StackhubConfig, paths: HostPaths, config_file: Path | None,
                  environment: dict | None = None) -> dict:
    hub = cfg.hub
    volumes = [
        _bind("/var/run/docker.sock", "/var/run/docker.sock", "rw"),
        f"{hub.state_volume}:{HUB_STATE}:rw",
        _bind(paths.secrets, HUB_SECRETS),
    ]
    if cfg.courses.enabled:
        volumes.append(f"{cfg.courses.volume}:{HUB_COURSES}:rw")
    env = {"STACKHUB_HUB_STATE": HUB_STATE, "STACKHUB_SECRETS": HUB_SECRETS, **(environment or {})}
    if config_file:
        volumes.append(_bind(config_file.resolve(), HUB_CONFIG))
        env["STACKHUB_CONFIG"] = HUB_CONFIG
    # files the config names by host path are mounted at the same path
    volumes += [_bind(p.resolve(), p.resolve()) for p in _auth_files(cfg)]
    return dict(
        image=hub.image,
        name=HUB_NAME,
        labels={names.LABEL_ROLE: "hub"},
        network=hub.network,
        environment=env,
        volumes=volumes,
        working_dir=HUB_STATE,
        restart_policy={"Name": "unless-stopped"},
        detach=True,
    )


def ensure_secrets(paths: HostPaths) -> dict[str, Path]:
    """Generate the run-time secrets once, 0600; existing ones are kept (and never printed here)."""
    out = {}
    for name in SECRET_NAMES:
        path = paths.secrets / name
        if not path.exists():
            value = secrets.token_urlsafe(9) if name == "shared-password" else secrets.token_hex(32)
            _write_private(path, value.encode() + b"\n")
        out[name] = path
    os.chmod(paths.secrets, 0o700)
    return out


def tls_files(cfg: StackhubConfig, paths: HostPaths) -> TLSFiles:
    if cfg.tls.cert_file:
        return TLSFiles(None, cfg.tls.cert_file.resolve(), cfg.tls.key_file.resolve())
    return ensure_local_tls(paths.tls, [cfg.hub.public_host])


class Deployment:
    """I/O of the single-host deployment, on a ``docker.DockerClient``."""

    def __init__(self, *, client, cfg: StackhubConfig, paths: HostPaths, config_file: Path | None, log=print):
        self.client = client
        self.cfg = cfg
        self.paths = paths
        self.config_file = config_file
        self.log = log

    def _remove(self, name: str):
        from docker.errors import NotFound

        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            pass

    def _ensure_network(self):
        if not self.client.networks.list(names=[self.cfg.hub.network]):
            self.client.networks.create(self.cfg.hub.network, driver="bridge", labels={names.LABEL_ROLE: "network"})

    def _ensure_volume(self, name: str, role: str):
        from docker.errors import NotFound

        try:
            self.client.volumes.get(name)
        except NotFound:
            self.client.volumes.create(name, labels={names.LABEL_ROLE: role})

    def up(self, environment: dict | None = None) -> TLSFiles:
        """Start (or restart) proxy and hub; user servers keep running across it."""
        self.log("[1/4] secrets and TLS certificate")
        ensure_secrets(self.paths)
        tls = tls_files(self.cfg, self.paths)
        self.log("[2/4] network and volumes")
        self._ensure_network()
        if self.cfg.hub.state_volume.startswith("/"):  # a host directory, e.g. on its own filesystem
            Path(self.cfg.hub.state_volume).mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self._ensure_volume(self.cfg.hub.state_volume, "hub-state")
        if self.cfg.courses.enabled:
            self._ensure_volume(self.cfg.courses.volume, "courses")
        for mount in self.cfg.volumes.data:
            if not mount.source.startswith("/"):
                self._ensure_volume(mount.source, "data")
        self.log("[3/4] proxy and hub containers")
        self._remove(PROXY_NAME)
        self._remove(HUB_NAME)
        self.client.containers.run(**proxy_container(self.cfg, self.paths, tls))
        self.client.containers.run(**hub_container(self.cfg, self.paths, self.config_file, environment))
        self.log("[4/4] waiting for the hub to answer")
        self.wait_ready(tls)
        return tls

    def _services_with_pages(self) -> set[str]:
        from .hubconfig import COURSES_SERVICE, SESSIONS_SERVICE

        return {SESSIONS_SERVICE} | ({COURSES_SERVICE} if self.cfg.courses.enabled else set())

    def wait_ready(self, tls: TLSFiles, timeout: float = 180):
        """Wait until the hub answers and the proxy routes its service pages.

        The hub answers before its managed services are routed; a page opened in that second
        would get the hub's 404, so "ready" includes the routes.
        """
        if tls.ca:
            ctx, host = ssl.create_default_context(cafile=str(tls.ca)), "localhost"
        else:  # an operator's certificate names the public host; this is only a readiness probe
            ctx, host = ssl._create_unverified_context(), "127.0.0.1"
        base = f"https://{host}:{self.cfg.hub.https_port}/hub/api"
        token = (self.paths.secrets / "admin-token").read_text().strip()
        routes = {f"/services/{name}/" for name in self._services_with_pages()}
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(f"{base}/proxy", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                    table = json.load(resp)
                missing = routes - set(table)
                if not missing:
                    return
                last = f"waiting for routes {', '.join(sorted(missing))}"
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
            hub = self.client.containers.get(HUB_NAME)
            # with a restart policy a hub that cannot start loops through "restarting"
            if hub.status in ("exited", "restarting") or hub.attrs.get("RestartCount", 0) > 0:
                hub.stop(timeout=1)
                raise RuntimeError(f"the hub exited; its log ends:\n{hub.logs(tail=30).decode(errors='replace')}")
            time.sleep(0.5)
        raise RuntimeError(f"the hub was not ready at {base} within {timeout:.0f} s ({last}); see `docker logs {HUB_NAME}`")

    def down(self):
        """Stop hub, proxy and user servers; homes, data and hub state stay."""
        for c in self.client.containers.list(all=True, filters={"label": f"{names.LABEL_ROLE}=server"}):
            self.log(f"stopping {c.name}")
            c.remove(force=True)
        for name in (HUB_NAME, PROXY_NAME):
            self._remove(name)
        self.log("stopped hub and proxy; homes, data and hub state are kept")
