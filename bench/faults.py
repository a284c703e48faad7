"""Benchmark of faults and backups (issue 16): recovery time per fault, backup and restore of homes.

    STACKHUB_STATE=/tmp/faults/var STACKHUB_CONFIG=/tmp/faults/stackhub.yaml \\
        python bench/faults.py [--users 30] [--mb 100] [--faults-only | --backup-only]

Runs against the deployment those two variables name (it must be up: `stackhub up`), never the
default ``stackhub`` one: its prefix must be something else. Faults (the deployment keeps running):

- hub SIGKILL: a running server, then a crash of the hub's process (not ``docker kill``, so
  Docker's restart policy applies): seconds until the hub answers, until the running server answers
  through the proxy, until a new spawn is ready;
- proxy restarted alone: seconds until a user's route answers again.

Backup: ``--users`` home volumes of ``--mb`` MiB of random data each (labelled as this deployment's
homes), ``stackhub backup --homes`` while the hub runs, then ``down``, every volume of the
deployment removed, ``stackhub restore``, ``up``: times and the backup's size. Prints Markdown rows
for bench/RESULTS-faults.md; removes the users, their containers and volumes afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker  # noqa: E402
import requests  # noqa: E402

from spawner.cli.client import host_paths  # noqa: E402
from spawner.core import names  # noqa: E402
from spawner.core.config import load_config  # noqa: E402
from spawner.hub.origins import server_origin  # noqa: E402
from bench import localhost  # noqa: E402

localhost.install()  # user servers answer at <user>.users.localhost

REPO = Path(__file__).resolve().parent.parent


class Hub:
    def __init__(self):
        self.cfg = load_config()
        if self.cfg.hub.prefix == names.PREFIX:
            raise SystemExit("refusing to run against the default `stackhub` deployment: give a config of your own")
        self.paths = host_paths()
        self.url = f"https://localhost:{self.cfg.hub.https_port}/"
        self.ca = str(self.paths.tls / "ca.pem")
        self.token = (self.paths.secrets / "admin-token").read_text().strip()
        self.own = names.Deployment(self.cfg.hub.prefix)
        self.client = docker.from_env()

    def api(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}hub/api{path}", verify=self.ca,
                                headers={"Authorization": f"token {self.token}"}, **kw)

    def answers(self) -> bool:
        try:
            return self.api("GET", "/", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def reachable(self, user) -> bool:
        try:
            return requests.get(f"{server_origin(self.cfg.hub, user)}user/{user}/api", headers={"Authorization": f"token {self.token}"},
                                verify=self.ca, timeout=3, allow_redirects=False).status_code == 200
        except requests.RequestException:
            return False

    def spawn(self, user, timeout=180):
        self.api("POST", f"/users/{user}")
        r = self.api("POST", f"/users/{user}/server", json={})
        assert r.status_code in (201, 202), r.text
        until(lambda: (self.api("GET", f"/users/{user}").json().get("servers", {}).get("") or {}).get("ready"), timeout)

    def cli(self, *args):
        t = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "spawner.cli.main", *args], cwd=REPO, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"stackhub {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return time.monotonic() - t, out.stdout


def until(check, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(step)


def faults(hub: Hub, rows: list):
    user = f"bf-{uuid.uuid4().hex[:4]}"
    hub.spawn(user)
    container = hub.client.containers.get(hub.own.hub)
    pid = container.attrs["State"]["Pid"]
    if container.status != "running" or pid <= 1:  # never kill(0) (our own group) or init
        raise SystemExit(f"the hub is not running: {container.attrs['State']}")
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    until(lambda: not hub.answers(), 30, 0.05)
    until(hub.answers, 300)
    back = time.monotonic() - t0
    until(lambda: hub.reachable(user), 120)
    surviving = time.monotonic() - t0
    second = f"{user}-2"
    hub.spawn(second)
    first_spawn = time.monotonic() - t0
    rows.append(f"| hub SIGKILL (restart policy) | {back:.1f} | {surviving:.1f} | {first_spawn:.1f} |")

    hub.client.containers.get(hub.own.proxy).restart(timeout=2)
    t0 = time.monotonic()
    until(lambda: hub.reachable(user), 120)
    route = time.monotonic() - t0
    third = f"{user}-3"
    hub.spawn(third)
    rows.append(f"| proxy restarted alone | (hub untouched) | {route:.1f} | {time.monotonic() - t0:.1f} |")
    for u in (user, second, third):
        hub.cli("users", "delete", u, "--purge")


def backup(hub: Hub, n: int, mb: int, rows: list):
    users = [f"bb{i:02d}-{uuid.uuid4().hex[:3]}" for i in range(n)]
    volumes = {}
    for u in users:
        name = names.home_volume_name(u, hub.cfg.volumes.home_volume)
        hub.client.volumes.create(name, labels={**hub.own.labels("home"), names.LABEL_USER: u})
        volumes[u] = name
        hub.api("POST", f"/users/{u}")
    print(f"filling {n} homes with {mb} MiB each ...", file=sys.stderr)
    mounts = {v: {"bind": f"/h/{i}", "mode": "rw"} for i, v in enumerate(volumes.values())}
    hub.client.containers.run(hub.cfg.hub.image, entrypoint=["sh", "-c", f"for d in /h/*; do head -c {mb}M /dev/urandom > $d/data.bin; "
                                                                          "chown -R 1000:1000 $d; done"],
                              volumes=mounts, user="0", remove=True, network_disabled=True)
    dest = Path(tempfile.mkdtemp(prefix="stackhub-bench-")) / "backup"
    try:
        took, _ = hub.cli("backup", str(dest), "--homes")
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        rows.append(f"| backup --homes, hub running | {n} x {mb} MiB | {took:.1f} | {size / 2**20:.0f} MiB |")
        down, _ = hub.cli("down")
        for v in hub.client.volumes.list(filters={"label": f"stackhub.deployment={hub.cfg.hub.prefix}"}):
            v.remove(force=True)
        took, _ = hub.cli("restore", str(dest))
        rows.append(f"| restore onto wiped volumes | {n} x {mb} MiB | {took:.1f} | |")
        up, _ = hub.cli("up")
        rows.append(f"| down / up around it | | {down:.1f} / {up:.1f} | |")
        assert all(hub.api("GET", f"/users/{u}").status_code == 200 for u in users)
    finally:
        shutil.rmtree(dest.parent)
        for u in users:
            hub.api("DELETE", f"/users/{u}")
            try:
                hub.client.volumes.get(volumes[u]).remove(force=True)
            except docker.errors.NotFound:
                pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--faults-only", action="store_true")
    p.add_argument("--backup-only", action="store_true")
    args = p.parse_args()
    hub = Hub()
    rows: list[str] = []
    if not args.backup_only:
        rows.append("| fault | hub answers (s) | running server answers (s) | new spawn ready (s) |")
        rows.append("|---|---|---|---|")
        faults(hub, rows)
        print("\n".join(rows), flush=True)
        rows.clear()
    if not args.faults_only:
        rows.append("| step | homes | seconds | size |")
        rows.append("|---|---|---|---|")
        backup(hub, args.users, args.mb, rows)
        print("\n".join(rows))


if __name__ == "__main__":
    main()
