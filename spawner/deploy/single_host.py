"""The single-host deployment: hub and proxy containers, built as plain data, then run.

``hub_container`` and ``proxy_container`` are pure: (config, host paths) -> keyword arguments of
``docker.client.containers.run``. ``Deployment`` does the I/O: networks, volumes, secrets, TLS files,
containers, the network isolation rules (built by the pure ``isolation``), and waiting until the hub
answers. ``make up`` / ``make down`` call it through the CLI.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from spawner.deploy import isolation
from spawner.deploy.demo_data import ensure_demo_data
from spawner.core import names
from spawner.core.config import OAuthAuth, SharedPasswordAuth, StackhubConfig
from spawner.core.names import HUB_COURSES, HUB_PORT, PROXY_API_PORT
from spawner.core.specs import container_log_config, log_limit
from spawner.deploy.tls import TLSFiles, check_own_certificate, ensure_local_tls, write_private

HUB_SECRETS = "/srv/stackhub/secrets"
HUB_STATE = "/srv/stackhub/state"
HUB_CONFIG = "/srv/stackhub/stackhub.yaml"
PROXY_TLS = "/srv/tls"
DOCKER_SOCKET = "/var/run/docker.sock"
SECRET_NAMES = ("proxy-token", "admin-token", "shared-password", "admin-password")
# CPU weight of the hub and the proxy (Docker's default for every container is 1024). In a burst,
# a hundred JupyterLab servers starting on two cores each got the same weight as the hub, so the
# hub's event loop got 1/100 of the CPU and stalled for 18 s at a time (bench/RESULTS-load.md):
# every spawn, route and login waits on it. A weight only counts while the CPU is contended; the
# hub uses at most about a core, so the servers still get the rest.
INFRA_CPU_SHARES = 65536


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
    hub, own = cfg.hub, names.Deployment(cfg.hub.prefix)
    chp = [
        "configurable-http-proxy", "--ip", "0.0.0.0", "--port", "8443",
        "--ssl-cert", f"{PROXY_TLS}/cert.pem", "--ssl-key", f"{PROXY_TLS}/key.pem",
        "--redirect-port", "8080", "--redirect-to", str(hub.https_port),
        # the API listens only on the proxy's address on hub.apiNetwork (the alias exists there alone)
        "--api-ip", own.proxy_api, "--api-port", str(PROXY_API_PORT),
        "--default-target", f"http://{own.hub}:{HUB_PORT}",
        "--error-target", f"http://{own.hub}:{HUB_PORT}/hub/error",
    ]
    if hub.subdomains:  # JupyterHub's routes then start with the host (alice.users.localhost/user/alice/)
        chp.append("--host-routing")
    # the token is read from its file inside the container: it never appears in `docker inspect`
    script = f'CONFIGPROXY_AUTH_TOKEN="$(cat {HUB_SECRETS}/proxy-token)" exec {shlex.join(chp)}'
    return dict(
        image=hub.image,
        name=own.proxy,
        command=["sh", "-c", script],
        labels=own.labels("proxy"),
        network=hub.network,
        ports={"8443/tcp": (hub.bind_address, hub.https_port), "8080/tcp": (hub.bind_address, hub.http_port)},
        volumes=[
            _bind(paths.secrets / "proxy-token", f"{HUB_SECRETS}/proxy-token"),
            _bind(tls.cert, f"{PROXY_TLS}/cert.pem"),
            _bind(tls.key, f"{PROXY_TLS}/key.pem"),
        ],
        restart_policy={"Name": "unless-stopped"},
        cpu_shares=INFRA_CPU_SHARES,
        mem_limit=hub.proxy_mem_limit,
        **container_log_config(log_limit(cfg)),
        detach=True,
    )


def _auth_files(cfg: StackhubConfig) -> list[Path]:
    auth = cfg.auth
    if isinstance(auth, SharedPasswordAuth):
        return [auth.password_file] if auth.password_file else []
    if isinstance(auth, OAuthAuth):
        return [p for p in (auth.client_secret_file, auth.ca_file) if p]
    return []


def engine_socket(docker_host: str | None) -> str:
    """The host path of the engine's socket that the hub gets as ``/var/run/docker.sock``: the one
    ``DOCKER_HOST`` names (``unix://PATH``), else Docker's default. The hub spawns on the engine the
    deployment was made on; only a local socket can be mounted into it."""
    if not docker_host:
        return DOCKER_SOCKET
    if docker_host.startswith("unix://") and docker_host[len("unix://"):].startswith("/"):
        return docker_host[len("unix://"):]
    raise RuntimeError(f"DOCKER_HOST={docker_host}: the hub reaches the engine through its socket, mounted "
                       "into the hub container; give a local one (unix:///PATH) or unset DOCKER_HOST")


def hub_container(cfg: StackhubConfig, paths: HostPaths, config_file: Path | None,
                  environment: dict | None = None, docker_socket: str | None = None) -> dict:
    hub = cfg.hub
    volumes = [
        _bind(docker_socket or DOCKER_SOCKET, DOCKER_SOCKET, "rw"),
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
        name=names.Deployment(hub.prefix).hub,
        labels=names.Deployment(hub.prefix).labels("hub"),
        network=hub.network,
        environment=env,
        volumes=volumes,
        working_dir=HUB_STATE,
        restart_policy={"Name": "unless-stopped"},
        cpu_shares=INFRA_CPU_SHARES,
        mem_limit=hub.mem_limit,
        **container_log_config(log_limit(cfg)),
        detach=True,
    )


def ensure_secrets(paths: HostPaths) -> dict[str, Path]:
    """Generate the run-time secrets once, 0600; existing ones are kept (and never printed here)."""
    out = {}
    for name in SECRET_NAMES:
        path = paths.secrets / name
        if not path.exists():
            value = secrets.token_urlsafe(9) if name == "shared-password" else secrets.token_hex(32)
            write_private(path, value.encode() + b"\n")
        out[name] = path
    os.chmod(paths.secrets, 0o700)
    return out


def secret_environment(paths: HostPaths, environment: dict | None) -> dict:
    """Secrets from the operator's environment (the OAuth client secret) become 0600 files in the
    secrets directory, and the hub gets ``NAME_FILE`` pointing at them: an environment variable
    would show in ``docker inspect`` to anyone who may run it."""
    out = {}
    for name, value in (environment or {}).items():
        path = paths.secrets / f"env-{name.lower()}"
        write_private(path, value.encode() + b"\n")
        out[f"{name}_FILE"] = f"{HUB_SECRETS}/{path.name}"
    return out


def tls_files(cfg: StackhubConfig, paths: HostPaths) -> TLSFiles:
    hub = cfg.hub
    hosts = names.wildcard_hosts(hub.public_host, hub.server_domain) if hub.subdomains else [hub.public_host]
    if cfg.tls.cert_file:
        if not names.is_ip_address(hub.public_host):
            check_own_certificate(cfg.tls.cert_file, hosts)
        return TLSFiles(None, cfg.tls.cert_file.resolve(), cfg.tls.key_file.resolve())
    return ensure_local_tls(paths.tls, hosts)


def host_nameservers() -> list[str]:
    """The resolvers Docker's embedded DNS forwards to (it asks them from inside the container)."""
    for path in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        try:
            found = isolation.nameservers(Path(path).read_text())
        except OSError:
            continue
        if found:
            return found
    return []


def host_networks() -> list[str]:
    """IPv4 networks of the host's global addresses (``ip -j addr``); empty when ``ip`` is missing."""
    try:
        done = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10)
        links = json.loads(done.stdout or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    out = []
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("scope") == "global":
                out.append(str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network))
    return out


class Deployment:
    """I/O of the single-host deployment, on a ``docker.DockerClient``."""

    logs_command = "docker logs"  # how an operator reads the hub's log

    def __init__(self, *, client, cfg: StackhubConfig, paths: HostPaths, config_file: Path | None, log=print,
                 docker_socket: str | None = None):
        """``docker_socket``: the host path of ``client``'s engine socket (default: from ``DOCKER_HOST``
        at ``up``, as ``docker.from_env()`` reads it), which the hub gets to spawn on the same engine."""
        self.client = client
        self.cfg = cfg
        self.paths = paths
        self.config_file = config_file
        self.log = log
        self.docker_socket = docker_socket

    @property
    def own(self) -> names.Deployment:
        """This deployment's object names (``hub.prefix``)."""
        return names.Deployment(self.cfg.hub.prefix)

    def servers(self, all: bool = False) -> list:
        """This deployment's user servers: labelled with its prefix (or, from before the label
        existed, unlabelled and named under it). Another deployment's are never among them."""
        found = []
        for c in self.client.containers.list(all=all, filters={"label": f"{names.LABEL_ROLE}=server"}):
            deployment = c.labels.get(names.LABEL_DEPLOYMENT)
            if deployment == self.cfg.hub.prefix or (deployment is None and c.name.startswith(f"{self.cfg.hub.prefix}-")):
                found.append(c)
        return found

    def _remove(self, name: str):
        from docker.errors import NotFound

        try:
            self.client.containers.get(name).remove(force=True, v=True)
        except NotFound:
            pass

    def _network(self, name: str):
        # the engine's name filter matches parts of names too
        return next((n for n in self.client.networks.list(names=[name]) if n.name == name), None)

    def _ensure_networks(self):
        """The users network (enable_icc=false) and the internal api network; one made with other
        settings (an older stackhub's) is made again when nothing is attached to it any more."""
        for spec in isolation.networks(self.cfg):
            net = self._network(spec.name)
            if net is not None:
                net.reload()
                problem = spec.mismatch(net.attrs)
                if problem is None:
                    continue
                attached = sorted(c.name for c in net.containers)
                if attached:
                    raise RuntimeError(
                        f"Docker network {spec.name} exists with other settings ({problem}) and "
                        f"{', '.join(attached)} use it; stop them (`make down`) and run `make up` again")
                self.log(f"re-creating Docker network {spec.name} ({problem})")
                net.remove()
            if spec.fixed:
                self._create_fixed(spec)
            else:
                self.client.networks.create(**spec.as_docker())

    def _create_fixed(self, spec: isolation.NetworkSpec, attempts: int = 3):
        """Let Docker pick a free subnet, then make the network again with that subnet given, which
        is what lets the hub and the proxy have fixed addresses in it."""
        from docker.errors import APIError
        from docker.types import IPAMConfig, IPAMPool

        for attempt in range(attempts):
            probe = self.client.networks.create(**spec.as_docker())
            probe.reload()
            subnet = next(c["Subnet"] for c in probe.attrs["IPAM"]["Config"] if "." in c.get("Subnet", ""))
            probe.remove()
            layout = isolation.fixed_addresses(subnet)
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=layout["subnet"], gateway=layout["gateway"],
                                                     iprange=layout["ip_range"])])
            try:
                return self.client.networks.create(**spec.as_docker(), ipam=ipam)
            except APIError:  # another network took the subnet in between
                if attempt == attempts - 1:
                    raise

    def _fixed_address(self, role: str) -> str:
        config = self.client.networks.get(self.cfg.hub.network).attrs["IPAM"]["Config"]
        subnet = next(c["Subnet"] for c in config if "." in c.get("Subnet", ""))
        return isolation.fixed_addresses(subnet)[role]

    def _start(self, kwargs: dict, api_aliases: list[str], role: str):
        """Create a container on the users network at its fixed address, join it to the api network, start it."""
        kwargs = {k: v for k, v in kwargs.items() if k != "detach"}
        endpoint = self.client.api.create_endpoint_config(ipv4_address=self._fixed_address(role))
        container = self.client.containers.create(**kwargs, networking_config={self.cfg.hub.network: endpoint})
        self.client.networks.get(self.cfg.hub.api_network).connect(container, aliases=api_aliases)
        container.start()
        return container

    # -- the iptables rules (spawner.deploy.isolation builds them) ----------------------------------

    def _iptables(self, family: str, *args, input: str | None = None) -> str:
        binary = {"ipv4": "iptables", "ipv6": "ip6tables"}[family]
        if args and args[0] == "restore":
            cmd = [f"{binary}-restore", "--noflush", "-w"]
        else:
            cmd = [binary, "-w", *args]
        try:
            done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise RuntimeError(self._firewall_hint(f"{cmd[0]} is not installed")) from None
        if done.returncode != 0:
            raise RuntimeError(self._firewall_hint(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}"))
        return done.stdout

    @staticmethod
    def _firewall_hint(problem: str) -> str:
        return (f"cannot set the network isolation rules: {problem}. Run `make up`/`make down` as root on the "
                "Docker engine's host, or set spawner.network.firewall: false and firewall the users network "
                "yourself (docs/security.md)")

    @staticmethod
    def _families() -> list[str]:
        """IPv4 always; IPv6 when the host has it and ip6tables is there."""
        v6 = Path("/proc/net/if_inet6").exists() and shutil.which("ip6tables") is not None
        return ["ipv4", "ipv6"] if v6 else ["ipv4"]

    def _tagged(self, family: str, tag: str) -> list[str]:
        lines = []
        for chain in isolation.CHAINS[family]:
            lines += isolation.tagged_lines(self._iptables(family, "-S", chain), tag)
        return lines

    def check_firewall(self):
        """Fail before anything starts when the rules could not be set (not root, no iptables)."""
        if self.cfg.spawner.network.firewall:
            self._iptables("ipv4", "-S", "DOCKER-USER")

    def endpoints(self) -> isolation.Endpoints:
        """Read the users network's bridge, the hub's and proxy's addresses, resolvers and LAN."""
        name = self.cfg.hub.network
        attrs = self.client.networks.get(name).attrs
        bridge = (attrs.get("Options") or {}).get(isolation.BRIDGE_NAME_OPTION) or f"br-{attrs['Id'][:12]}"

        def address(container_name):
            c = self.client.containers.get(container_name)
            ip = c.attrs["NetworkSettings"]["Networks"].get(name, {}).get("IPAddress")
            if not ip:
                raise RuntimeError(f"{container_name} has no address on the Docker network {name}")
            return ip

        return isolation.Endpoints(bridge=bridge, hub=address(self.own.hub), proxy=address(self.own.proxy),
                                   dns=tuple(host_nameservers()), host_networks=tuple(host_networks()))

    def apply_firewall(self) -> list[isolation.Rule]:
        """Replace this deployment's rules with fresh ones in one transaction per family (idempotent)."""
        if not self.cfg.spawner.network.firewall:
            self.log("spawner.network.firewall is false: no iptables rules (see docs/security.md)")
            return []
        tag = isolation.rule_tag(self.cfg)
        endpoints = self.endpoints()
        rules = isolation.firewall_rules(self.cfg, endpoints)
        applied = []
        for family in self._families():
            mine = [r for r in rules if r.family == family]
            script = isolation.restore_script(mine, self._tagged(family, tag), tag)
            self._iptables(family, "restore", input=script)
            applied += mine
        self.log(f"network isolation: {len(applied)} rules on {endpoints.bridge} "
                 f"(`iptables -S DOCKER-USER`; docs/security.md)")
        return applied

    def remove_firewall(self):
        """Remove every rule tagged with this deployment's users network (``down``)."""
        if not self.cfg.spawner.network.firewall and shutil.which("iptables") is None:
            return
        tag = isolation.rule_tag(self.cfg)
        for family in self._families():
            try:
                existing = self._tagged(family, tag)
            except RuntimeError:
                if self.cfg.spawner.network.firewall:
                    raise
                return
            if existing:
                self._iptables(family, "restore", input=isolation.restore_script([], existing, tag))
                self.log(f"removed {len(existing)} {family} isolation rules")

    def _ensure_volume(self, name: str, role: str):
        from docker.errors import NotFound

        try:
            self.client.volumes.get(name)
        except NotFound:
            self.client.volumes.create(name, labels=self.own.labels(role))

    def up(self, environment: dict | None = None) -> TLSFiles:
        """Start (or restart) proxy and hub; user servers keep running across it."""
        self.log("[1/5] secrets and TLS certificate")
        socket = self.docker_socket or engine_socket(os.environ.get("DOCKER_HOST"))
        ensure_secrets(self.paths)
        tls = tls_files(self.cfg, self.paths)
        self.check_firewall()
        self.log("[2/5] hub database (a backup before an upgrade)")
        self.backup_before_upgrade()
        self.log("[3/5] networks and volumes")
        self._remove(self.own.proxy)
        self._remove(self.own.hub)
        self._ensure_networks()
        if self.cfg.hub.state_volume.startswith("/"):  # a host directory, e.g. on its own filesystem
            Path(self.cfg.hub.state_volume).mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self._ensure_volume(self.cfg.hub.state_volume, "hub-state")
        if self.cfg.courses.enabled:
            self._ensure_volume(self.cfg.courses.volume, "courses")
        for mount in self.cfg.volumes.data:
            if not mount.source.startswith("/"):
                self._ensure_volume(mount.source, "data")
        if self.cfg.volumes.demo_data:
            ensure_demo_data(self.client, self.cfg, log=self.log)
        self.log("[4/5] proxy and hub containers, network isolation rules")
        self._start(proxy_container(self.cfg, self.paths, tls), [self.own.proxy_api], "proxy")
        self._start(hub_container(self.cfg, self.paths, self.config_file, secret_environment(self.paths, environment),
                                  socket), [], "hub")
        self.apply_firewall()
        self._warn_stranded_servers()
        self.log("[5/5] waiting for the hub to answer")
        self.wait_ready(tls)
        return tls

    def running_hub_image(self) -> tuple[str | None, str | None]:
        """(image ID, image reference) of this deployment's hub container, running or stopped;
        (None, None) when there is none."""
        from docker.errors import NotFound

        try:
            hub = self.client.containers.get(self.own.hub)
        except NotFound:
            return None, None
        return hub.attrs.get("Image"), hub.attrs.get("Config", {}).get("Image")

    def backup_before_upgrade(self) -> Path | None:
        """Before the hub is replaced: a backup of its database when the new hub may migrate it
        (``Archiver.before_upgrade``); user servers are not touched, and keep running."""
        from spawner.deploy.backup import Archiver

        image, ref = self.running_hub_image()
        return Archiver(client=self.client, cfg=self.cfg, paths=self.paths, log=self.log).before_upgrade(
            running_image=image, running_ref=ref, stop_hub=self.stop_old_hub)

    def stop_old_hub(self):
        """Stop the old hub before the backup; returns what starts it again (should the backup fail)."""
        hub = self.client.containers.get(self.own.hub)
        self.log(f"  stopping the old hub {hub.name} (user servers keep running)")
        hub.stop(timeout=10)
        return hub.start

    def _warn_stranded_servers(self):
        """Servers started by an older stackhub on another network: the hub cannot reach them."""
        for c in self.servers():
            nets = set(c.attrs.get("NetworkSettings", {}).get("Networks") or {})
            if self.cfg.hub.network not in nets:
                self.log(f"warning: {c.name} runs on {', '.join(sorted(nets)) or 'no network'}, not on "
                         f"{self.cfg.hub.network}; stop it (`make down`, then `make up`)")

    def _services_with_pages(self) -> set[str]:
        from spawner.core.names import COURSES_SERVICE, SESSIONS_SERVICE

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
        # in subdomain mode the proxy's routes begin with their host (our pages: the hub's own)
        host = self.cfg.hub.public_host if self.cfg.hub.subdomains else ""
        routes = {f"{host}/services/{name}/" for name in self._services_with_pages()}
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
            self.check_hub_alive()
            time.sleep(0.5)
        raise RuntimeError(f"the hub was not ready at {base} within {timeout:.0f} s ({last}); "
                           f"see `{self.logs_command} {self.own.hub}`")

    def check_hub_alive(self):
        """RuntimeError with the end of the hub's log if it exited (``wait_ready`` stops waiting)."""
        hub = self.client.containers.get(self.own.hub)
        # with a restart policy a hub that cannot start loops through "restarting"
        if hub.status in ("exited", "restarting") or hub.attrs.get("RestartCount", 0) > 0:
            hub.stop(timeout=1)
            raise RuntimeError(f"the hub exited; its log ends:\n{hub.logs(tail=30).decode(errors='replace')}")

    def down(self):
        """Stop hub, proxy and user servers; homes, data and hub state stay."""
        from docker.errors import NotFound

        for c in self.servers(all=True):
            self.log(f"stopping {c.name}")
            try:
                c.remove(force=True, v=True)
            except NotFound:  # the hub removed it meanwhile
                pass
        for name in (self.own.hub, self.own.proxy):
            self._remove(name)
        self.remove_firewall()
        self.log("stopped hub and proxy; homes, data and hub state are kept")
