"""The Docker engine restarted: hub and proxy come back by themselves, a user's server is either
restored or shown stopped and starts again on the first try, and the home is intact.

The shared engine (/var/run/docker.sock) is never restarted: the test runs a second dockerd of its
own (its own data root, exec root, socket, pid file, cgroup parent, default bridge and subnets:
never ``--bridge none`` or ``--default-address-pool``, which delete the host's docker0), loads the hub image and one
stack image into it, deploys stackhub on it (prefix ``stackhub-engine``, ports 9643/9280), and
restarts that engine the way ``systemctl restart docker``
does (SIGTERM, then a new dockerd). Everything is removed afterwards, also on failure: the
deployment's networks (their bridges), the engine, its bridge, its directories and the one iptables
rule.

The second engine runs with ``--iptables=false``: its own chains would be written into the host's
tables beside the shared engine's, and a restart rewrites them. So the test deployment runs without
stackhub's isolation rules (``spawner.network.firewall: false``; test_isolation covers them on the
shared engine), and the test adds one rule of its own: the shared engine set the FORWARD policy to
DROP, and with br_netfilter that drops bridged traffic between containers of the second engine too
(Docker would have accepted it for its own bridges).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest
import requests
import yaml

from docker.types import IPAMConfig, IPAMPool

from spawner.core.config import load_config
from spawner.deploy import isolation
from spawner.deploy.single_host import Deployment, HostPaths
from spawner.hub.origins import server_origin

from .hubfixture import ARTIFACTS, checkout_hub_image
from .test_faults import until

NAME = "stackhub-test-engine"
DATA_ROOT = Path("/var/lib") / NAME
EXEC_ROOT = Path("/run") / NAME
SOCKET = Path("/run") / f"{NAME}.sock"
PIDFILE = Path("/run") / f"{NAME}.pid"
POOL = "10.213.0.0/16"  # not one of Docker's default pools: the shared engine never hands it out
# The engine's own default bridge, made by the test, and its networks' subnets given by the test.
# Never `--bridge none`, nor `--default-address-pool`: a dockerd started with the first, or
# restarted with the second, deletes the host's docker0 (the shared engine's default bridge).
BRIDGE, BRIDGE_ADDRESS = "shtest-eng0", "10.213.200.1/24"
USERS_SUBNET, API_SUBNET = "10.213.1.0/24", "10.213.2.0/24"
FORWARD_RULE = ["FORWARD", "-s", POOL, "-d", POOL, "-m", "comment", "--comment", NAME, "-j", "ACCEPT"]
PREFIX = "stackhub-engine"
HTTPS_PORT, HTTP_PORT = 9643, 9280
USER = "engine-ann"
MARKER = "written before the engine restart\n"

pytestmark = pytest.mark.timeout(900)


def say(request, text: str):
    """Progress on the terminal, also without ``-s`` (the image load takes a minute or two)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[engine restart] {text}", end="", flush=True)


class Engine:
    """A dockerd of the test's own; ``start``/``stop`` as a service manager would."""

    def __init__(self, log: Path):
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.images: list[str] = []  # loaded into it
        self.bridges: set[str] = set()  # of its networks: removed from the host at the end
        self.client: docker.DockerClient | None = None  # once it answers (the client asks its version)

    def start(self, timeout: float = 60):
        self.bridges.add(BRIDGE)
        if not Path(f"/sys/class/net/{BRIDGE}").exists():
            for args in (["add", BRIDGE, "type", "bridge"], ["set", BRIDGE, "up"]):
                subprocess.run(["ip", "link", *args], check=True)
            subprocess.run(["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE], check=True)
        config = self.log.with_name("daemon.json")
        config.write_text("{}")  # not /etc/docker/daemon.json: that is the shared engine's
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--config-file", str(config), "--data-root", str(DATA_ROOT), "--exec-root", str(EXEC_ROOT),
                 "-H", f"unix://{SOCKET}", "--pidfile", str(PIDFILE), "--bridge", BRIDGE, "--iptables=false",
                 "--ip-masq=false", "--ip-forward=false", "--cgroup-parent", f"/{NAME}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dockerd exited:\n{self.tail()}"
            try:
                self.client = docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=120)
                self.client.ping()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        raise AssertionError(f"dockerd did not answer within {timeout} s:\n{self.tail()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 90):
        """SIGTERM (what `systemctl restart docker` sends): the engine stops its containers, then
        exits. SIGKILL: a crash; what it started (containerd, shims, port proxies) is left to the next."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def stop_leftover_engine():
    """An engine of an aborted earlier run (its pid file names a dockerd of ours): stop it."""
    try:
        pid = int(PIDFILE.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if cmdline and cmdline[0].endswith(b"dockerd") and str(SOCKET).encode() in b" ".join(cmdline):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.5)


def kill_leftover_processes():
    """What the engine started and a crash left behind: its containerd and shims (their command line
    names its exec root) and its port proxies (they forward to its address pool). Ours, by id."""
    pool = POOL.split(".0.0/")[0] + "."
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = b" ".join(args)
        ours = str(EXEC_ROOT).encode() in line or (args[0].endswith(b"docker-proxy") and
                                                   b"-container-ip " + pool.encode() in line)
        if ours and int(proc.name) != os.getpid():
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def iptables(*args) -> bool:
    return subprocess.run(["iptables", "-w", *args], capture_output=True).returncode == 0


def remove_directories():
    """Unmount what the engine may have left mounted under its directories, then remove them."""
    roots = (str(DATA_ROOT), str(EXEC_ROOT))
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    # the engine bind-mounts its data root onto itself (a private mount); a crash leaves it mounted
    for point in sorted((m for m in mounts if m in roots or m.startswith(tuple(r + "/" for r in roots))),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for path in (DATA_ROOT, EXEC_ROOT):
        shutil.rmtree(path, ignore_errors=True)
    for path in (SOCKET, PIDFILE):
        path.unlink(missing_ok=True)


def load_images(request, images: list[str], engine: Engine):
    """``docker save`` from the shared engine piped into ``docker load`` of the test's own, with progress."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    load = subprocess.Popen(["docker", "-H", f"unix://{SOCKET}", "load", "-q"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    copied, t0, last = 0, time.monotonic(), time.monotonic()
    while block := save.stdout.read(1 << 20):
        load.stdin.write(block)
        copied += len(block)
        if time.monotonic() - last > 15:
            say(request, f"  {copied >> 20} MiB loaded after {time.monotonic() - t0:.0f} s")
            last = time.monotonic()
    load.stdin.close()
    out = load.stdout.read().decode(errors="replace")
    assert save.wait() == 0 and load.wait() == 0, out
    return copied, time.monotonic() - t0


@pytest.fixture(scope="module")
def engine(request, tmp_path_factory, docker_client, stack_tags):
    """The second engine with the hub image and one stack image in it; removed with all it holds."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("a second Docker engine needs root and dockerd (Debian's docker.io)")
    stop_leftover_engine()
    kill_leftover_processes()
    remove_directories()
    docker0 = Path("/sys/class/net/docker0").exists()  # the shared engine's default bridge
    engine = Engine(tmp_path_factory.mktemp("engine") / "dockerd.log")
    rule = shutil.which("iptables") is not None
    if rule and not iptables("-C", *FORWARD_RULE):
        assert iptables("-I", *FORWARD_RULE), "cannot add the FORWARD rule for the second engine's bridges"
    try:
        t0 = time.monotonic()
        engine.start()
        say(request, f"second engine up in {time.monotonic() - t0:.1f} s ({SOCKET}); loading images ...")
        images = [checkout_hub_image(docker_client), f"stackhub/lsst-stack:{stack_tags[0]}"]
        copied, took = load_images(request, images, engine)
        say(request, f"loaded {', '.join(images)} ({copied >> 20} MiB) in {took:.0f} s")
        engine.images = images
        yield engine
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        if engine.log.exists():
            shutil.copy(engine.log, ARTIFACTS / f"{NAME}-dockerd.log")
        try:
            if engine.client is not None and engine.proc.poll() is None:
                for c in engine.client.containers.list(all=True):
                    c.remove(force=True, v=True)
                for net in engine.client.networks.list():
                    if net.name not in ("bridge", "host", "none"):
                        engine.bridges.add(f"br-{net.id[:12]}")
                        net.remove()
        finally:
            engine.stop()
            kill_leftover_processes()
            for bridge in engine.bridges:  # a network the engine could not remove keeps its bridge on the host
                if Path(f"/sys/class/net/{bridge}").exists():
                    subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
            remove_directories()
            if rule:
                while iptables("-C", *FORWARD_RULE):
                    iptables("-D", *FORWARD_RULE)
    assert Path("/sys/class/net/docker0").exists() == docker0, "the second engine changed the host's docker0"


def hub_answers(url, token, ca) -> bool:
    try:
        return requests.get(f"{url}hub/api/", headers={"Authorization": f"token {token}"}, verify=ca,
                            timeout=3).status_code == 200
    except requests.RequestException:
        return False


def test_engine_restarted_hub_and_proxy_come_back_servers_restored_or_startable_homes_intact(
        request, engine, tmp_path, stack_tags):
    client = engine.client
    config = {
        "hub": {"prefix": PREFIX, "httpsPort": HTTPS_PORT, "httpPort": HTTP_PORT, "network": f"{PREFIX}-users",
                "apiNetwork": f"{PREFIX}-internal", "stateVolume": f"{PREFIX}-hub-state",
                "image": engine.images[0], "adminUsers": ["admin"]},
        "volumes": {"data": [], "homeVolume": f"{PREFIX}-home-{{user}}", "homeBudget": None, "demoData": False},
        "courses": {"volume": f"{PREFIX}-courses", "shipped": []},
        "culler": {"enabled": False},
        # see the module's docstring: no iptables rules of stackhub's on an engine without iptables
        "spawner": {"network": {"firewall": False}},
    }
    config_file = tmp_path / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    paths = HostPaths(tmp_path / "var")
    dep = Deployment(client=client, cfg=load_config(config_file), paths=paths, config_file=config_file,
                     log=lambda m: None, docker_socket=str(SOCKET))
    # the networks as `up` makes them, but in the test's address pool (`up` keeps networks that fit)
    users, internal = isolation.networks(dep.cfg)
    layout = isolation.fixed_addresses(USERS_SUBNET)
    client.networks.create(**users.as_docker(), ipam=IPAMConfig(pool_configs=[
        IPAMPool(subnet=layout["subnet"], gateway=layout["gateway"], iprange=layout["ip_range"])]))
    client.networks.create(**internal.as_docker(), ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=API_SUBNET)]))
    tls = dep.up()
    for net in (dep.cfg.hub.network, dep.cfg.hub.api_network):
        engine.bridges.add(f"br-{client.networks.get(net).id[:12]}")
    url, ca = f"https://localhost:{HTTPS_PORT}/", str(tls.ca)
    token = (paths.secrets / "admin-token").read_text().strip()
    headers = {"Authorization": f"token {token}"}

    def api(method, path, **kw):
        return requests.request(method, f"{url}hub/api{path}", headers=headers, verify=ca, timeout=30, **kw)

    def ready() -> bool:
        return bool(api("GET", f"/users/{USER}").json()["servers"].get("", {}).get("ready"))

    def answers() -> bool:
        try:
            server = f"{server_origin(dep.cfg.hub, USER)}user/{USER}/api/status"
            return requests.get(server, headers=headers, verify=ca, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    assert api("POST", f"/users/{USER}").status_code == 201
    r = api("POST", f"/users/{USER}/server", json={"image_tag": stack_tags[0]})
    assert r.status_code in (201, 202), r.text
    until("the server is ready", ready, 180)
    until("the server answers", answers, 60)
    server = client.containers.get(dep.own.server(USER))
    code, out = server.exec_run(["sh", "-c", f'printf %s "$1" > /home/{USER}/engine-restart.txt', "sh", MARKER])
    assert code == 0, out

    def settled():
        model = api("GET", f"/users/{USER}").json()
        if model.get("pending"):
            return None
        srv = model["servers"].get("")
        if srv is None:
            return "shown stopped"
        return "restored" if srv.get("ready") and answers() else None

    # a restart as `systemctl restart docker` does it. A crash (SIGKILL) of a dockerd that runs its
    # own containerd is not tried: the next dockerd finds that containerd still running and gives up
    # ("timeout waiting for containerd to start"; docs/operations.md)
    for sig in (signal.SIGTERM,):
        say(request, f"restarting the second engine ({sig.name}, then a new dockerd) ...")
        t0 = time.monotonic()
        engine.stop(sig)
        stopped = time.monotonic() - t0
        engine.start()
        engine_back = time.monotonic() - t0
        # no `up`: Docker's restart policy brings hub and proxy back
        until(f"after {sig.name}: the hub answers through the proxy again", lambda: hub_answers(url, token, ca), 180)
        hub_back = time.monotonic() - t0
        for name in (dep.own.hub, dep.own.proxy):
            assert client.containers.get(name).status == "running"
        outcome = until(f"after {sig.name}: the server restored or shown stopped", settled, 120)
        if outcome == "shown stopped":
            r = api("POST", f"/users/{USER}/server", json={"image_tag": stack_tags[0]})
            assert r.status_code in (201, 202), f"the first start after {sig.name} failed: {r.status_code} {r.text}"
            until("the server is ready again", ready, 180)
            until("the server answers again", answers, 60)
        server_back = time.monotonic() - t0
        r = requests.get(f"{server_origin(dep.cfg.hub, USER)}user/{USER}/api/contents/engine-restart.txt",
                         params={"content": "1"}, headers=headers, verify=ca, timeout=30)
        assert r.status_code == 200 and r.json()["content"] == MARKER, r.text
        say(request, f"{sig.name}: engine gone in {stopped:.1f} s, answering again after {engine_back:.1f} s; hub "
                     f"and proxy answer after {hub_back:.1f} s; the server was {outcome}, answering after "
                     f"{server_back:.1f} s; home intact")
