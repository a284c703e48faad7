"""What runs beside the attendees during a round: the hub's CPU and memory, and two latency probes.

CPU and memory come from the containers' cgroups on the host (cgroup v1 ``cpuacct``/``memory``, or
cgroup v2), read twice a second: cheap and exact, where ``docker stats`` takes a second or two per
call. The probes ask, a few times a second, the hub's REST API (``GET /hub/api/``) and one ready
user's server through the proxy (``GET /user/NAME/api/status``), with the admin token.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import requests

from bench.load.stats import summarize

CGROUP = Path("/sys/fs/cgroup")


class Cgroup:
    """A container's cgroup on this host (v1 or v2), read from its files."""

    def __init__(self, container_id: str):
        v1 = CGROUP / "cpuacct" / "docker" / container_id
        self.v1 = v1.exists()
        if self.v1:
            self.cpu_file, self.mem_dir = v1 / "cpuacct.usage", CGROUP / "memory" / "docker" / container_id
        else:
            d = CGROUP / "system.slice" / f"docker-{container_id}.scope"
            if not d.exists():
                raise FileNotFoundError(f"no cgroup found for container {container_id[:12]}")
            self.cpu_file, self.mem_dir = d / "cpu.stat", d

    def _stat(self) -> dict:
        out = {}
        for line in (self.mem_dir / "memory.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            out[k] = int(v)
        return out

    def cpu_seconds(self) -> float:
        if self.v1:
            return int(self.cpu_file.read_text()) / 1e9
        usage = next(line for line in self.cpu_file.read_text().splitlines() if line.startswith("usage_usec"))
        return int(usage.split()[1]) / 1e6

    def rss_bytes(self) -> int:
        stat = self._stat()
        return stat["total_rss"] if self.v1 else stat["anon"]

    def working_set_bytes(self) -> int:
        """What ``docker stats`` shows as memory use: usage minus inactive page cache."""
        stat = self._stat()
        if self.v1:
            return int((self.mem_dir / "memory.usage_in_bytes").read_text()) - stat.get("total_inactive_file", 0)
        return int((self.mem_dir / "memory.current").read_text()) - stat.get("inactive_file", 0)


def container_cgroup(client, name: str) -> Cgroup:
    return Cgroup(client.containers.get(name).id)


class ResourceSampler(threading.Thread):
    """Samples CPU seconds and RSS of named containers (role -> name) until ``stop()``."""

    def __init__(self, client, containers: dict, interval: float = 0.5):
        super().__init__(daemon=True)
        self.groups = {role: container_cgroup(client, name) for role, name in containers.items()}
        self.interval = interval
        self.samples = {role: [] for role in containers}  # [t, cpu_s, rss_bytes]
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)
        self.sample()

    def sample(self):
        t = time.monotonic()
        for role, g in self.groups.items():
            try:
                self.samples[role].append([t, g.cpu_seconds(), g.rss_bytes()])
            except (OSError, StopIteration, KeyError, ValueError):
                pass  # the container went away in the middle; the other samples stand

    def stop(self) -> dict:
        self._halt.set()
        self.join(10)
        return {role: summarize_resources(s) for role, s in self.samples.items()}


def summarize_resources(samples) -> dict | None:
    """CPU seconds used, mean and peak CPU % (over ~2 s windows), RSS at start and peak (MiB)."""
    if len(samples) < 2:
        return None
    (t0, c0, r0), (t1, c1, _) = samples[0], samples[-1]
    peak = 0.0
    j = 0
    for i in range(1, len(samples)):
        while samples[i][0] - samples[j][0] > 2.0:
            j += 1
        if i > j and samples[i][0] > samples[j][0]:
            peak = max(peak, (samples[i][1] - samples[j][1]) / (samples[i][0] - samples[j][0]))
    return {"cpu_seconds": round(c1 - c0, 2), "cpu_pct_mean": round(100 * (c1 - c0) / max(t1 - t0, 1e-9), 1),
            "cpu_pct_peak": round(100 * peak, 1), "rss_start_mib": round(r0 / 2**20, 1),
            "rss_peak_mib": round(max(s[2] for s in samples) / 2**20, 1), "seconds": round(t1 - t0, 1)}


class LatencyProbe(threading.Thread):
    """Times ``GET /hub/api/`` and ``GET /user/NAME/api/status`` (a ready user, in turn) until stopped."""

    def __init__(self, endpoint, token: str, interval: float):
        super().__init__(daemon=True)
        self.endpoint, self.url, self.interval = endpoint, endpoint.url, interval
        ca = endpoint.ca
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.verify = ca
        self.s.headers["Authorization"] = f"token {token}"
        self.ready = []            # appended by the attendees' ready callback
        self.times = {"hub_api": [], "user_status": []}
        self.errors = {"hub_api": [], "user_status": []}
        self._halt = threading.Event()

    def add_ready(self, user: str):
        self.ready.append(user)

    def _probe(self, kind: str, url: str):
        start = time.monotonic()
        try:
            r = self.s.get(url, timeout=30)
            ok, why = r.status_code == 200, f"HTTP {r.status_code}"
        except requests.RequestException as e:
            ok, why = False, type(e).__name__
        took = time.monotonic() - start
        (self.times[kind] if ok else self.errors[kind]).append(round(took, 4) if ok else why)

    def run(self):
        turn = itertools.count()
        while not self._halt.is_set():
            self._probe("hub_api", self.url + "hub/api/")
            if self.ready:
                user = self.ready[next(turn) % len(self.ready)]
                self._probe("user_status", self.endpoint.server_url(user, "api/status"))
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join(35)
        return {kind: {**summarize(self.times[kind]), "errors": len(self.errors[kind]),
                       "error_kinds": sorted(set(self.errors[kind]))} for kind in self.times}
