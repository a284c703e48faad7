"""Spawn benchmark on Kubernetes: first spawn, warm spawn and a burst of N concurrent spawns, with
the Helm chart on the single-node cluster of scripts/k8s-node.sh.

Brings the node up (as root), loads this checkout's hub image and the stack image, installs the
chart (tests/unit/helm/node.yaml, prefix khbench, namespace stackhub-khbench), then measures through
the proxy's NodePort and the REST API, as a client would: "ready" = the hub says ready AND
`/user/NAME/api/status` answers 200 through the proxy. Bounded: N users (default 10, at most 20),
each spawned once, 300 s limit; then the release and its namespace (homes included) are removed.

    sudo .venv/bin/python bench/k8s_spawn.py [--burst 10] [--tag w_2026_43]

Prints a table line for bench/RESULTS-k8s.md and the memory of each idle server pod (its cgroup).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import docker
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spawner.build.images import hub_checkout_ref  # noqa: E402
from spawner.core.names import Deployment  # noqa: E402

SCRIPT = REPO / "scripts" / "k8s-node.sh"
NS, RELEASE, PREFIX = "stackhub-khbench", "khbench", "khbench"
OWN = Deployment(PREFIX)


def sh(*args, env=None, input=None, timeout=900, check=True):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def node_env() -> dict:
    env = dict(os.environ)
    for line in sh(SCRIPT, "env").stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", os.environ["PATH"])
    return env


class Client:
    def __init__(self, url, token):
        self.url = url
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"

    def call(self, method, path, **kw):
        return self.s.request(method, f"{self.url}{path}", timeout=60, **kw)

    def spawn(self, name, tag, limit=300.0) -> float:
        t0 = time.monotonic()
        r = self.call("POST", f"/hub/api/users/{name}/server", json={"image_tag": tag})
        assert r.status_code in (201, 202), r.text
        while time.monotonic() - t0 < limit:
            server = (self.call("GET", f"/hub/api/users/{name}").json().get("servers") or {}).get("")
            if server and server.get("ready") and self.call("GET", f"/user/{name}/api/status").status_code == 200:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready in {limit:.0f} s")

    def stop(self, name):
        self.call("DELETE", f"/hub/api/users/{name}/server")
        t0 = time.monotonic()
        while self.call("GET", f"/hub/api/users/{name}").json().get("servers") and time.monotonic() - t0 < 120:
            time.sleep(0.3)


def print_pod_times(env, names, t0: float):
    """When each burst pod was created, its container started and it turned Ready (seconds after
    the burst began; the API's timestamps have 1 s resolution): where a burst's time goes."""
    from datetime import datetime

    def at(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - t0

    rows = []
    for name in names:
        pod = json.loads(sh("kubectl", "-n", NS, "get", "pod", OWN.server(name).lower(), "-o", "json", env=env).stdout)
        st = pod["status"]
        ready = next(c["lastTransitionTime"] for c in st["conditions"] if c["type"] == "Ready")
        started = st["containerStatuses"][0]["state"]["running"]["startedAt"]
        rows.append((at(pod["metadata"]["creationTimestamp"]), at(started), at(ready)))
    for label, i in (("created", 0), ("container started", 1), ("Ready", 2)):
        vals = sorted(r[i] for r in rows)
        print(f"  pods {label}: {vals[0]:+.0f} .. {vals[-1]:+.0f} s")


def pod_memory_mib(env, names) -> list[float]:
    """RSS of each server pod's cgroup (cgroup v1, cgroupfs driver: kubepods/<qos>/pod<uid>)."""
    out = []
    for name in names:
        uid = json.loads(sh("kubectl", "-n", NS, "get", "pod", OWN.server(name).lower(), "-o", "json", env=env).stdout)["metadata"]["uid"]
        found = list(Path("/sys/fs/cgroup/memory").glob(f"kubepods*/**/pod{uid}/memory.stat"))
        if found:
            stat = dict(line.split() for line in found[0].read_text().splitlines())
            out.append(int(stat["total_rss"]) / 2**20)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--tag", default="w_2026_43")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Helm value, e.g. chart.hubResources.cpu=500m")
    args = p.parse_args(argv)
    burst = min(args.burst, 20)
    if os.geteuid() != 0:
        raise SystemExit("needs root (the node)")
    sh(SCRIPT, "up", timeout=1800)
    env = node_env()
    hub_image = hub_checkout_ref(docker.from_env())
    sh(SCRIPT, "load", hub_image, f"stackhub/lsst-stack:{args.tag}", timeout=1200)
    sh("kubectl", "delete", "namespace", NS, "--ignore-not-found", "--wait=true", env=env)
    sh("kubectl", "create", "namespace", NS, env=env)
    catalog = sh(REPO / ".venv" / "bin" / "python", "-m", "spawner.cli.main", "images", "catalog", "--prefix", PREFIX)
    sh("kubectl", "-n", NS, "apply", "-f", "-", env=env, input=catalog.stdout)
    try:
        t = time.monotonic()
        sh("helm", "-n", NS, "install", RELEASE, REPO / "helm" / "stackhub", "-f", REPO / "tests/unit/helm/node.yaml",
           "--set", f"hub.image={hub_image}", "--set", f"hub.prefix={PREFIX}",
           *[a for kv in args.set for a in ("--set", kv)], "--wait", "--timeout", "300s", env=env)
        port = json.loads(sh("kubectl", "-n", NS, "get", "service", OWN.proxy, "-o", "json", env=env).stdout)["spec"]["ports"][0]["nodePort"]
        token = base64.b64decode(json.loads(sh("kubectl", "-n", NS, "get", "secret", OWN.hub_secrets, "-o", "json",
                                               env=env).stdout)["data"]["admin-token"]).decode().strip()
        c = Client(f"http://10.244.0.1:{port}", token)
        while c.call("GET", "/hub/api/").status_code != 200:
            time.sleep(0.5)
        print(f"helm install until the hub answers: {time.monotonic() - t:.1f} s")
        names = [f"bench-{i:02d}" for i in range(burst)]
        for n in names:
            c.call("POST", f"/hub/api/users/{n}")
        first = c.spawn(names[0], args.tag)  # a new home claim is provisioned
        c.stop(names[0])
        warm = c.spawn(names[0], args.tag)  # the claim exists
        c.stop(names[0])
        print(f"first spawn {first:.1f} s, warm spawn {warm:.1f} s")
        load = os.getloadavg()[0]
        t, t_wall = time.monotonic(), time.time()
        with cf.ThreadPoolExecutor(burst) as pool:
            times = list(pool.map(lambda n: c.spawn(n, args.tag), names))
        wall = time.monotonic() - t
        print(f"burst of {burst} (load {load:.1f} before): all ready in {wall:.1f} s; each {min(times):.1f}-"
              f"{max(times):.1f} s, median {statistics.median(times):.1f} s; 0 failed")
        print_pod_times(env, names, t_wall)
        time.sleep(10)
        mem = pod_memory_mib(env, names)
        if mem:
            print(f"idle memory per server pod: median {statistics.median(mem):.0f} MiB "
                  f"(min {min(mem):.0f}, max {max(mem):.0f})")
        for n in names:
            c.call("DELETE", f"/hub/api/users/{n}/server")
    finally:
        sh("helm", "-n", NS, "uninstall", RELEASE, "--wait", env=env, check=False)
        sh("kubectl", "delete", "namespace", NS, "--wait=true", "--timeout=300s", env=env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
