"""`make bench` / `python -m bench.load`: N attendees against stackhub and stock JupyterHub, interleaved.

    .venv/bin/python -m bench.load --users 10 --rounds 2            # both targets, ABBA
    .venv/bin/python -m bench.load --users 100 --window 60          # a tutorial's first minute
    .venv/bin/python -m bench.load --targets stackhub --users 2     # stackhub alone

Starts both deployments (prefix ``stackhub-bench``, ports 11443/11080; stock on 11543), runs the rounds
in ABBA order, prints progress every two seconds, writes the result JSON and a ready-over-time PNG,
prints the side-by-side table, and removes every container, volume and network it made. Exit
status 1 when any attendee failed (the failures and their reasons are in the JSON and printed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import secrets
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import docker
from pydantic import ValidationError

from bench import localhost
from bench.load.attendee import Attendee, Progress
from bench.load.monitor import LatencyProbe, ResourceSampler, container_cgroup
from bench.load.scenario import TARGETS, Scenario, schedule, username
from bench.load.stats import markdown_table, result_document, round_summary

REPO = Path(__file__).resolve().parents[2]


def parse(argv) -> tuple[Scenario, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--users", "-n", type=int, default=10, help="attendees per round (1-200)")
    p.add_argument("--window", type=float, default=0.0, help="seconds over which they arrive; 0 = all at once")
    p.add_argument("--rounds", type=int, default=1, help="rounds per target (ABBA order)")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: stackhub, stock")
    p.add_argument("--tag", default="w_2026_43", help="stack tag the spawn form posts")
    p.add_argument("--idle", type=float, default=10.0, help="seconds idle (kernel running) before memory is read")
    p.add_argument("--shutdown-kernel", action="store_true",
                   help="shut each kernel down after its cell (for a large N where N kernels do not fit in memory)")
    p.add_argument("--no-kernel", action="store_true",
                   help="stop at the lab: no kernel, no cell (the hub's path without the kernels' CPU)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one attendee may take to its cell's output")
    p.add_argument("--prewarm", action="store_true",
                   help="an admin pre-warms the N servers first (stackhub only); measures login → lab")
    p.add_argument("--prewarm-concurrency", type=int, help="servers the pre-warm starts at a time")
    p.add_argument("--shared-origin", action="store_true",
                   help="stackhub with hub.subdomains false (the fallback), for the origins row")
    p.add_argument("--scenario", type=Path, help="a YAML/JSON file with the scenario (flags are then ignored)")
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/load-<UTC time>.json); "
                                            "the PNG goes beside it")
    p.add_argument("--state", type=Path, default=REPO / "var" / "bench", help="secrets and TLS of the bench deployments")
    p.add_argument("--keep", action="store_true", help="leave the two hubs running afterwards (servers are removed)")
    args = p.parse_args(argv)
    if args.scenario:
        import yaml

        raw = yaml.safe_load(args.scenario.read_text())
        if not isinstance(raw, dict):
            p.error(f"{args.scenario}: a scenario is a mapping of {', '.join(Scenario.model_fields)}")
    else:
        raw = dict(users=args.users, window=args.window, rounds=args.rounds,
                   targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
                   tag=args.tag, idle=args.idle, timeout=args.timeout, keep_kernel=not args.shutdown_kernel,
                   kernel=not args.no_kernel,
                   prewarm=args.prewarm, prewarm_concurrency=args.prewarm_concurrency,
                   shared_origin=args.shared_origin)
    try:
        return Scenario(**raw), args
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'scenario'}: {err['msg']}" for err in e.errors())
        p.error(f"invalid scenario: {problems}")


def machine(client) -> dict:
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    others = [c.name for c in client.containers.list() if not c.name.startswith("stackhub-bench")]
    return {"cpus": os.cpu_count(), "memory_gib": round(mem / 2**20, 1), "kernel": platform.release(),
            "python": platform.python_version(), "docker": client.version().get("Version"),
            "loadavg": list(os.getloadavg()), "other_containers_running": len(others)}


def log(msg: str):
    print(f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} {msg}", flush=True)


def run_round(client, target, scenario: Scenario, round_no: int, run_id: str) -> dict:
    n = scenario.users
    users = [username(run_id, round_no, target.name, i) for i in range(n)]
    password = secrets.token_urlsafe(12)
    progress = Progress()
    prewarm = None
    if scenario.prewarm:
        log(f"[{target.name} round {round_no}] pre-warming {n} servers ({scenario.tag}) as an admin ...")
        try:
            prewarm = target.prewarm(users, scenario.tag, scenario.prewarm_concurrency,
                                     lambda m: log(f"[{target.name} round {round_no}] pre-warm {m}"))
        except BaseException:
            target.remove_users(users)
            target.remove_prewarm_group()
            raise
    load_start = os.getloadavg()
    sampler = ResourceSampler(client, target.hub_containers())
    probe = LatencyProbe(target.endpoint, target.token, scenario.probe_interval)
    sampler.start()
    probe.start()
    t0 = time.monotonic()
    attendees = [Attendee(target.endpoint, u, password, tag=scenario.tag, code=scenario.code, expect=scenario.expect,
                          arrival=a, t0=t0, timeout=scenario.timeout, progress=progress,
                          ready_callback=probe.add_ready, keep_kernel=scenario.keep_kernel,
                          prewarmed=scenario.prewarm, kernel=scenario.kernel)
                 for u, a in zip(users, scenario.arrivals())]

    def go(a: Attendee):
        time.sleep(max(0.0, t0 + a.rec.arrival - time.monotonic()))
        progress.reached("arrived")
        return a.run()

    done = threading.Event()

    def report():
        while not done.wait(2.0):
            c = progress.counts
            log(f"[{target.name} round {round_no}] {time.monotonic() - t0:6.1f} s  arrived {c.get('arrived', 0)}/{n}"
                f"  logged in {c.get('login', 0)}  spawned {c.get('spawn', 0)}  ready {c.get('ready', 0)}"
                f"  kernel {c.get('kernel_start', 0)}  cell {c.get('cell', 0)}  failed {progress.failed}")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        with cf.ThreadPoolExecutor(max_workers=n) as pool:
            records = list(pool.map(go, attendees))
        latency = probe.stop()
        done.set()
        log(f"[{target.name} round {round_no}] all walked in {time.monotonic() - t0:.1f} s; "
            f"{sum(r.ok for r in records)} ok, {progress.failed} failed; idle {scenario.idle:g} s")
        time.sleep(scenario.idle)
        idle_mem = []
        for a in attendees:
            if (a.rec.done_at if scenario.kernel else a.rec.ready_at) is not None:
                try:
                    idle_mem.append(container_cgroup(client, target.server_container(a.user)).working_set_bytes()
                                    / 2**20)
                except (docker.errors.NotFound, OSError) as e:
                    a.rec.fail("idle", f"idle: server container not readable: {e}")
        with cf.ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda a: a.stop(), [a for a in attendees if a.rec.ready_at is not None]))
        hub = sampler.stop()
    finally:
        done.set()
        probe.stop()
        sampler.stop()
        target.remove_users(users)
        if scenario.prewarm:
            target.remove_prewarm_group()
    log(f"[{target.name} round {round_no}] stopped; {sum(not r.ok for r in records)} failed")
    for r in records:
        if not r.ok:
            log(f"  FAILED {r.user} in {r.failed_phase}: {r.reason}")
    return round_summary(records, target=target.name, round_no=round_no, users=n, window=scenario.window,
                         hub=hub.get("hub"), proxy=hub.get("proxy"), idle_memory_mib=idle_mem, latency=latency,
                         loadavg={"start": list(load_start), "end": list(os.getloadavg())}, prewarm=prewarm)


def build_targets(client, scenario: Scenario, state: Path) -> dict:
    from bench.load.targets import StackhubTarget, StockTarget
    from spawner.build.images import hub_checkout_ref
    from spawner.core import names
    from spawner.deploy.tls import ensure_local_tls

    hub_image = hub_checkout_ref(client)
    try:
        client.images.get(hub_image)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"no hub image {hub_image} for this checkout: run `make hub-image`") from None
    try:
        client.images.get(f"stackhub/lsst-stack:{scenario.tag}")
    except docker.errors.ImageNotFound:
        raise SystemExit(f"no stack image stackhub/lsst-stack:{scenario.tag}: build it (`make images TAGS=...`)") \
            from None
    tags = sorted({t.split(":", 1)[1] for i in client.images.list(name="stackhub/lsst-stack") for t in i.tags}
                  - {"recommended"})
    tls = ensure_local_tls(state / "stackhub" / "var" / "tls", names.wildcard_hosts("localhost"))
    out = {}
    if "stackhub" in scenario.targets:
        out["stackhub"] = StackhubTarget(client, state / "stackhub", hub_image,
                                         subdomains=not scenario.shared_origin)
    if "stock" in scenario.targets:
        out["stock"] = StockTarget(client, state / "stock", hub_image, tags, tls)
    return out


def main(argv=None) -> int:
    scenario, args = parse(argv)
    localhost.install()  # user servers answer at <user>.users.localhost (subdomain mode)
    # `timeout`/kill: unwind through the finally below, so every container the bench made goes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    client = docker.from_env()
    started = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or REPO / "bench" / "results" / f"load-{started:%Y%m%dT%H%M%SZ}.json"
    run_id = secrets.token_hex(2)
    targets = build_targets(client, scenario, args.state)
    info = machine(client)
    log(f"bench: {scenario.users} attendees per round, "
        f"{'all at once' if not scenario.window else f'over {scenario.window:g} s'}, "
        f"{scenario.rounds} round(s) of {', '.join(scenario.targets)}; load average {info['loadavg']}, "
        f"{info['other_containers_running']} other containers running")
    runs = []
    try:
        for name, t in targets.items():
            log(f"starting {name} ...")
            t.up()
            log(f"{name} answers at {t.endpoint.url}")
        for round_no, name in schedule(scenario.targets, scenario.rounds):
            time.sleep(3)  # let the previous round's containers go
            runs.append(run_round(client, targets[name], scenario, round_no, run_id))
    finally:
        if not args.keep:
            for name, t in targets.items():
                log(f"removing {name}")
                t.down()
    finished = datetime.datetime.now(datetime.timezone.utc)
    info["loadavg_end"] = list(os.getloadavg())
    command = "python -m bench.load " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = result_document(scenario=scenario.model_dump(mode="json"), runs=runs, machine=info,
                             started=started.isoformat(timespec="seconds"),
                             finished=finished.isoformat(timespec="seconds"), command=command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    log(f"result: {out}")
    try:
        from bench.load.plot import plot_ready

        log(f"plot: {plot_ready(result, out.with_suffix('.png'))}")
    except ImportError:
        log("no plot: matplotlib is not installed (pip install -c constraints.txt -e '.[bench]')")
    print(markdown_table(result))
    failed = sum(r["failed"] for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
