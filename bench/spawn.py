"""Spawn benchmark: first spawn, warm spawn, and a tutorial burst of N concurrent spawns.

Takes the deployment lock, (re)starts the deployment as `make up` does (state in var/, config from
$STACKHUB_CONFIG or the defaults), then measures through the public HTTPS endpoint and the REST API,
exactly as a client would. Bounded: N users (default 10), each spawned
once, a 300 s limit, then every server it started is stopped and its users deleted.

    .venv/bin/python bench/spawn.py [--burst 10] [--tag recommended]

Prints a table and the idle memory of each server (docker stats) for bench/RESULTS-spawn.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import fcntl
import statistics
import sys
import time
import uuid
from pathlib import Path

import docker
import requests

from spawner.core.names import container_name

REPO = Path(__file__).resolve().parent.parent
LOCK = Path("/tmp/stackhub-deployment.lock")  # the integration tests' lock: one user of the deployment


class Client:
    def __init__(self, url, token, ca, server_origin=None):
        self.url, self.ca = url.rstrip("/"), ca
        # where a user's server answers: its own host in subdomain mode (spawner.hub.origins)
        self.server_origin = server_origin or (lambda name: self.url + "/")
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.verify = ca
        self.s.headers["Authorization"] = f"token {token}"

    def call(self, method, path, **kw):
        r = self.s.request(method, f"{self.url}/hub/api{path}", timeout=60, **kw)
        r.raise_for_status()
        return r

    def spawn(self, name, tag, limit=300.0) -> float:
        """Seconds from the start request until the server is ready and answers through the proxy."""
        self.call("POST", f"/users/{name}")
        t0 = time.monotonic()
        self.call("POST", f"/users/{name}/server", json={"image_tag": tag})
        while time.monotonic() - t0 < limit:
            if self.call("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"):
                r = self.s.get(f"{self.server_origin(name)}user/{name}/api/status", timeout=30)
                if r.status_code == 200:
                    return time.monotonic() - t0
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready in {limit}s")

    def remove(self, name):
        try:
            self.call("DELETE", f"/users/{name}/server")
        except requests.HTTPError:
            pass
        for _ in range(120):
            if not self.call("GET", f"/users/{name}").json()["servers"]:
                break
            time.sleep(0.5)
        self.call("DELETE", f"/users/{name}")


def memory_mib(client, names) -> list[float]:
    out = []
    for n in names:
        c = client.containers.get(container_name(n))
        stats = c.stats(stream=False)
        mem = stats["memory_stats"]
        used = mem.get("usage", 0) - mem.get("stats", {}).get("cache", 0)
        out.append(used / 2**20)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burst", type=int, default=10, help="concurrent spawns (bounded: at most 30)")
    p.add_argument("--tag", default="recommended")
    p.add_argument("--url", default="https://localhost:8443/")
    p.add_argument("--state", default=str(REPO / "var"))
    args = p.parse_args(argv)
    burst = min(args.burst, 30)
    state = Path(args.state)
    lock = open(LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    from spawner.core.config import load_config
    from spawner.deploy.single_host import Deployment, HostPaths

    from spawner.hub.origins import server_origin

    sys.path.insert(0, str(REPO))  # run as `python bench/spawn.py`: the bench package beside it
    from bench import localhost

    localhost.install()  # servers answer at <user>.users.localhost in subdomain mode
    cfg = load_config()
    Deployment(client=docker.from_env(), cfg=cfg, paths=HostPaths(state), config_file=None,
               log=lambda m: None).up()
    api = Client(args.url, (state / "secrets/admin-token").read_text().strip(), str(state / "tls/ca.pem"),
                 server_origin=lambda name: server_origin(cfg.hub, name))
    engine = docker.from_env()
    run = uuid.uuid4().hex[:4]
    users = []
    try:
        first = f"bench-{run}-first"
        users.append(first)
        t_first = api.spawn(first, args.tag)
        api.remove(first)
        users.remove(first)
        warm = f"bench-{run}-warm"
        users.append(warm)
        t_warm = api.spawn(warm, args.tag)
        api.remove(warm)
        users.remove(warm)

        names = [f"bench-{run}-{i:02d}" for i in range(burst)]
        users += names
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(burst) as pool:
            times = list(pool.map(lambda n: api.spawn(n, args.tag), names))
        wall = time.monotonic() - t0
        time.sleep(5)
        mem = memory_mib(engine, names)
        print(f"first spawn (hub just restarted): {t_first:.1f} s")
        print(f"warm spawn: {t_warm:.1f} s")
        print(f"burst of {burst}: all ready in {wall:.1f} s; each {min(times):.1f}-{max(times):.1f} s, "
              f"median {statistics.median(times):.1f} s; 0 failed")
        print(f"idle memory per server: median {statistics.median(mem):.0f} MiB (min {min(mem):.0f}, max {max(mem):.0f})")
    finally:
        with cf.ThreadPoolExecutor(8) as pool:
            list(pool.map(api.remove, users))
    return 0


if __name__ == "__main__":
    sys.exit(main())
