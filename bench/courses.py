"""Benchmark of course delivery (issue 5): sync of a 100-notebook course into 30 homes, and the cost
of the sync at spawn.

    python bench/courses.py sync  [--homes 30] [--notebooks 100] [--parallel 8] [--image IMAGE]
    python bench/courses.py spawn [--rounds 5] [--notebooks 100]     (starts its own test deployment)

``sync``: publishes a course with ``CourseStore`` into a host directory (bind-mounted read-only like
the courses volume), starts ``--homes`` containers of the stack image as uid 1000, each with its
own home volume, then times "sync now" the way the course service does it (``docker exec
stackhub-course-sync --json``, ``--parallel`` at once): first delivery, a resync with nothing new,
and a v2 changing 10 notebooks while every user has edited one of them. Also times one sync at
container start (``stackhub-start``'s hook) in a fresh home.

``spawn``: starts the test deployment of tests/integration (hub, proxy, its own volumes; stop any
other deployment first: the container names are fixed), then starts and stops servers through the
REST API ``--rounds`` times each: no course published; a course of ``--notebooks`` notebooks into
fresh homes; and again into a home that has it. Prints the medians.

Results: bench/RESULTS-courses.md. Everything created is removed afterwards (names start with
``stackhub-bench-``).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker  # noqa: E402

from spawner.courses.publish import CourseStore, Source  # noqa: E402
from spawner.courses.sync import TOOL_NAME, TOOLS_DIR  # noqa: E402

MOUNT = "/opt/stackhub/courses"
TOOL = f"{MOUNT}/{TOOLS_DIR}/{TOOL_NAME}"


def notebook(i: int, version: int, cells: int = 40) -> bytes:
    """A plausible notebook (~30 KB): markdown and code cells, no outputs."""
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "lsst", "display_name": "LSST"}},
          "cells": [{"cell_type": "code" if c % 2 else "markdown", "metadata": {}, "id": f"c{c}",
                     "source": [f"# notebook {i} cell {c} version {version}\n", "x = 1\n" * 10],
                     **({"outputs": [], "execution_count": None} if c % 2 else {})} for c in range(cells)]}
    return json.dumps(nb, indent=1).encode()


def course_tar(n: int, changed: set[int] = frozenset(), version: int = 1) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(n):
            data = notebook(i, version if i in changed else 1)
            info = tarfile.TarInfo(f"week{i // 25}/nb{i:03d}.ipynb")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def bench_sync(args):
    client = docker.from_env()
    tag = f"stackhub-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="stackhub-bench-courses-") as tmp:
        store = CourseStore(root=Path(tmp))
        store.install_tool()
        store.publish("bench", Source("directory", "bench"), publisher="bench", upload=course_tar(args.notebooks))
        containers, volumes = [], []
        try:
            for i in range(args.homes):
                vol = client.volumes.create(f"{tag}-home-{i}")
                volumes.append(vol)
                containers.append(client.containers.run(
                    args.image, ["sleep", "infinity"], entrypoint=[], user="1000", detach=True,
                    name=f"{tag}-{i}", environment={"HOME": f"/home/u{i}"},
                    volumes={vol.name: {"bind": "/home", "mode": "rw"}, tmp: {"bind": MOUNT, "mode": "ro"}},
                    labels={"stackhub.role": "bench"}))
            for i, c in enumerate(containers):
                c.exec_run(["mkdir", "-p", f"/home/u{i}"], user="1000")

            def sync_all():
                def one(c):
                    code, out = c.exec_run([TOOL, "--json"], user="1000")
                    res = json.loads(out)
                    assert code == 0 and res["ok"], out
                    return res
                with ThreadPoolExecutor(args.parallel) as pool:
                    return list(pool.map(one, containers))

            rows = []
            t = timed(lambda: rows.append(sync_all()))
            counts = rows[-1][0]["courses"]["bench"]["counts"]
            print(f"first delivery   : {args.notebooks} notebooks x {args.homes} homes in {t:.2f} s "
                  f"({args.parallel} at once; per home {counts})")
            t = timed(lambda: rows.append(sync_all()))
            print(f"resync, no change: {t:.2f} s")
            for i, c in enumerate(containers):  # every user edits nb000
                c.exec_run(["sh", "-c", f"echo edit >> /home/u{i}/notebooks/bench/week0/nb000.ipynb"], user="1000")
            store.publish("bench", Source("directory", "bench"), publisher="bench",
                          upload=course_tar(args.notebooks, changed=set(range(10)), version=2))
            t = timed(lambda: rows.append(sync_all()))
            counts = rows[-1][0]["courses"]["bench"]["counts"]
            print(f"v2 (10 changed)  : {t:.2f} s (per home {counts})")
            seconds = [r["seconds"] for r in rows[0]]
            print(f"in-container time of the first sync per home: median {statistics.median(seconds):.3f} s, "
                  f"max {max(seconds):.3f} s")

            # the start hook in a fresh home: container start to exit, with and without the course
            def start(with_course: bool):
                vol = client.volumes.create(f"{tag}-fresh-{uuid.uuid4().hex[:4]}")
                volumes.append(vol)
                mounts = {vol.name: {"bind": "/home", "mode": "rw"}}
                if with_course:
                    mounts[tmp] = {"bind": MOUNT, "mode": "ro"}
                script = (f'mkdir -p $HOME; s={TOOL}; [ -x "$s" ] && "$s" --on-start --quiet || true; '
                          "ls $HOME/notebooks/bench 2>/dev/null | wc -l")
                t0 = time.monotonic()
                out = client.containers.run(args.image, ["sh", "-c", script], entrypoint=[], user="1000",
                                            environment={"HOME": "/home/fresh"}, volumes=mounts, remove=True)
                return time.monotonic() - t0, out.decode().strip()
            base = [start(False)[0] for _ in range(args.rounds)]
            withc = [start(True) for _ in range(args.rounds)]
            print(f"start hook, fresh home: without a course median {statistics.median(base):.3f} s; "
                  f"with {args.notebooks} notebooks median {statistics.median(t for t, _ in withc):.3f} s "
                  f"(dirs delivered: {withc[0][1]})")
        finally:
            for c in containers:
                c.remove(force=True)
            for v in volumes:
                v.remove(force=True)


def bench_spawn(args):
    """Spawn to ready through the REST API of a test deployment (tests/integration/hubfixture)."""
    import requests

    from tests.integration.hubfixture import remove_user_objects, start_hub

    with tempfile.TemporaryDirectory(prefix="stackhub-bench-hub-") as tmp:
        hub = start_hub(Path(tmp))
        users = []
        try:
            def courses(method, path, **kw):
                return requests.request(method, f"{hub.url}services/stackhub-courses/api/{path}", verify=hub.ca,
                                        headers={"Authorization": f"token {hub.token}", **kw.pop("headers", {})},
                                        timeout=120, **kw)

            deadline = time.monotonic() + 60
            while courses("GET", "courses").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)

            def spawn_once(fresh: bool) -> float:
                name = f"stackhub-bench-{uuid.uuid4().hex[:6]}" if fresh or not users else users[-1]
                if name not in users:
                    users.append(hub.create_user(name))
                t0 = time.monotonic()
                hub.spawn(name)
                took = time.monotonic() - t0
                hub.stop(name)
                return took

            spawn_once(True)  # warm-up: image layers and hub caches
            without, first, again = [], [], []
            upload = course_tar(args.notebooks).getvalue()
            for _ in range(args.rounds):  # interleaved, so a drift of the machine hits all three alike
                assert courses("DELETE", "courses/bench").status_code in (200, 404)
                without.append(spawn_once(True))
                r = courses("PUT", "courses/bench?source=bench", data=upload,
                            headers={"Content-Type": "application/x-tar"})
                assert r.status_code == 201, r.text
                first.append(spawn_once(True))    # a fresh home: the first delivery
                again.append(spawn_once(False))   # the same home: nothing new to copy
            med = statistics.median
            print(f"spawn to ready (REST API, {args.rounds} rounds each, medians): no course {med(without):.2f} s "
                  f"(min {min(without):.2f}); {args.notebooks}-notebook course, fresh home {med(first):.2f} s "
                  f"(min {min(first):.2f}); same home again {med(again):.2f} s (min {min(again):.2f})")
        finally:
            hub.deployment.down()
            remove_user_objects(hub.client, set(users))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sync")
    s.add_argument("--homes", type=int, default=30)
    s.add_argument("--notebooks", type=int, default=100)
    s.add_argument("--parallel", type=int, default=8)
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--image", default="stackhub/lsst-stack:recommended")
    sp = sub.add_parser("spawn")
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--notebooks", type=int, default=100)
    args = p.parse_args()
    (bench_sync if args.what == "sync" else bench_spawn)(args)


if __name__ == "__main__":
    main()
