"""Swarm next to Docker: single spawns and a burst of N, interleaved in one session on one engine.

Takes the deployment lock, starts two deployments side by side from this checkout's hub image: the
docker backend (prefix stackhub-swarmbench-docker, ports 12543/12180) and the swarm backend (prefix
stackhub-swarm, ports 12443/12080; the engine must be a Swarm manager). Then, alternating backend
by backend: ROUNDS single spawns each, then one burst of N on each. Every server is stopped, the
users, and both deployments with their volumes and networks removed at the end.

    .venv/bin/python bench/swarm.py [--burst 10] [--rounds 3] [--tag recommended]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import fcntl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spawn import LOCK, Client  # noqa: E402  (bench/spawn.py: the REST client that times a spawn)


def config(prefix: str, https: int, http: int, backend: str, image: str) -> dict:
    return {"hub": {"prefix": prefix, "httpsPort": https, "httpPort": http, "network": f"{prefix}-users",
                    "apiNetwork": f"{prefix}-internal", "stateVolume": f"{prefix}-hub-state", "image": image},
            "volumes": {"data": [{"source": f"{prefix}-data", "target": "/data"}], "homeVolume": f"{prefix}-home-{{user}}",
                        "homeBudget": None},
            "courses": {"volume": f"{prefix}-courses"}, "culler": {"enabled": False},
            "spawner": {"backend": {"type": backend}}}


BACKENDS = {"docker": ("stackhub-swarmbench-docker", 12543, 12180), "swarm": ("stackhub-swarm", 12443, 12080)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burst", type=int, default=10, help="concurrent spawns (at most 30)")
    p.add_argument("--rounds", type=int, default=3, help="single spawns per backend")
    p.add_argument("--tag", default="recommended")
    args = p.parse_args(argv)
    burst = min(args.burst, 30)
    lock = open(LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    from spawner.build.images import hub_checkout_ref
    from spawner.core.config import load_config
    from spawner.deploy.single_host import HostPaths
    from spawner.deploy.swarm import deployment_for

    engine = docker.from_env()
    image = hub_checkout_ref(engine)
    tmp = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    deps, apis, users = {}, {}, {b: [] for b in BACKENDS}
    try:
        for backend, (prefix, https, http) in BACKENDS.items():
            f = tmp / f"{backend}.yaml"
            f.write_text(yaml.safe_dump(config(prefix, https, http, backend, image)))
            cfg = load_config(f)
            paths = HostPaths(tmp / backend)
            deps[backend] = deployment_for(cfg)(client=engine, cfg=cfg, paths=paths, config_file=f, log=lambda m: None)
            deps[backend].up()
            apis[backend] = Client(f"https://localhost:{https}/", (paths.secrets / "admin-token").read_text().strip(),
                                   str(paths.tls / "ca.pem"))
        run = uuid.uuid4().hex[:4]
        single = {b: [] for b in BACKENDS}
        for i in range(args.rounds):
            for backend, api in apis.items():
                name = f"bench-{run}-{backend[0]}{i}"
                users[backend].append(name)
                single[backend].append(api.spawn(name, args.tag))
                api.remove(name)
        bursts = {}
        for backend, api in apis.items():
            names = [f"bench-{run}-{backend[0]}b{i:02d}" for i in range(burst)]
            users[backend] += names
            t0 = time.monotonic()
            with cf.ThreadPoolExecutor(burst) as pool:
                times = list(pool.map(lambda n, api=api: api.spawn(n, args.tag), names))
            bursts[backend] = (time.monotonic() - t0, times)
            with cf.ThreadPoolExecutor(8) as pool:
                list(pool.map(api.remove, names))
        print(f"| backend | single spawn, {args.rounds} rounds (s) | burst of {burst}: all ready (s) | each (s) | median (s) |")
        print("|---|---|---|---|---|")
        for backend in BACKENDS:
            wall, times = bursts[backend]
            print(f"| {backend} | {', '.join(f'{t:.1f}' for t in single[backend])} | {wall:.1f} | "
                  f"{min(times):.1f}-{max(times):.1f} | {statistics.median(times):.1f} |")
    finally:
        for backend, dep in deps.items():
            dep.down()
            prefix = BACKENDS[backend][0]
            time.sleep(3)  # the removed services' task containers let go of volumes and networks
            for v in engine.volumes.list():
                if v.name.startswith(f"{prefix}-"):
                    v.remove(force=True)
            for n in engine.networks.list(names=[prefix]):
                if n.name.startswith(f"{prefix}-"):
                    n.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
