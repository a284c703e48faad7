"""Benchmark of pre-warm (issue 6): start the servers of a group through the sessions service.

    python bench/prewarm.py [--users 5] [--concurrency 1 3 5] [--rounds 1]

Starts the test deployment (as the integration tests do, holding their deployment lock), makes
``--users`` users in one group, then for each concurrency pre-warms the group with the newest
weekly, times it until every server is ready, and stops all (timed too). Prints a Markdown table
for bench/RESULTS-prewarm.md. The deployment and the users' containers and volumes are removed
afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from tests.integration.hubfixture import remove_user_objects, start_hub  # noqa: E402

API = "services/stackhub-sessions/api/"


def call(hub, method, path, **kw):
    r = requests.request(method, hub.url + API + path, headers={"Authorization": f"token {hub.token}"},
                         verify=hub.ca, timeout=60, **kw)
    r.raise_for_status()
    return r.json()


def run_job(hub, body) -> dict:
    job = call(hub, "POST", "jobs", json=body)
    while not job["done"]:
        time.sleep(0.5)
        job = call(hub, "GET", f"jobs/{job['id']}")
    return job


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)

    hub = start_hub(Path(tempfile.mkdtemp(prefix="stackhub-bench-prewarm-")))
    users = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(args.users)]
    try:
        deadline = time.monotonic() + 60
        while requests.get(hub.url + API + "tags", headers={"Authorization": f"token {hub.token}"},
                           verify=hub.ca, timeout=10).status_code == 404:
            assert time.monotonic() < deadline, "sessions service did not come up"
            time.sleep(0.5)
        tag = next(t["name"] for t in call(hub, "GET", "tags")["tags"] if t["class"] == "weekly")
        for u in users:
            hub.create_user(u)
        group = f"bench-{uuid.uuid4().hex[:6]}"
        assert hub.api("POST", f"/groups/{group}", json={"users": users}).status_code == 201
        rows = []
        for conc in args.concurrency:
            for _ in range(args.rounds):
                t0 = time.monotonic()
                job = run_job(hub, {"action": "start", "group": group, "tag": tag, "concurrency": conc})
                wall = time.monotonic() - t0
                assert job["counts"] == {"ready": args.users}, job
                each = [u["seconds"] for u in job["users"]]
                t0 = time.monotonic()
                stop = run_job(hub, {"action": "stop", "group": group, "concurrency": 5})
                stop_wall = time.monotonic() - t0
                assert stop["counts"] == {"stopped": args.users}, stop
                rows.append((conc, wall, statistics.median(each), max(each), stop_wall))
                print(f"concurrency {conc}: all {args.users} ready in {wall:.1f}s "
                      f"(each: median {statistics.median(each):.1f}s, max {max(each):.1f}s); stop all {stop_wall:.1f}s",
                      flush=True)
        print()
        print("| servers | at once | all ready (s) | each, median (s) | each, max (s) | stop all (s) |")
        print("|---|---|---|---|---|---|")
        for conc, wall, med, mx, stop_wall in rows:
            print(f"| {args.users} | {conc} | {wall:.1f} | {med:.1f} | {mx:.1f} | {stop_wall:.1f} |")
    finally:
        hub.deployment.down()
        remove_user_objects(hub.client, set(users))
    return 0


if __name__ == "__main__":
    sys.exit(main())
