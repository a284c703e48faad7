"""Benchmark the stack images: size per tag, new bytes per extra tag, build time cold and warm.

    python bench/images.py [--cold] [--extra TAG] [--ca-bundle PATH] [TAGS...]

--cold removes every stackhub image (base, shared layer, stacks) and dangling build layers first,
so the first build is from nothing (debootstrap included when no registry answers); a second build
of the same tags is then timed warm (all layers reused). --extra TAG times adding one more tag to a
warm engine. Prints a Markdown table for bench/RESULTS-images.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spawner import images as img  # noqa: E402


def timed_build(tags: list[str], ca_bundle: str | None) -> float:
    cmd = [sys.executable, "-m", "spawner.build.images", "build", "--recommended", ""]
    if ca_bundle:
        cmd += ["--ca-bundle", ca_bundle]
    t0 = time.monotonic()
    subprocess.run(cmd + tags, cwd=REPO, check=True)
    return time.monotonic() - t0


def remove_all(client) -> None:
    for image in client.images.list():
        if any(t.startswith("stackhub/") for t in image.tags):
            for t in image.tags:
                client.images.remove(t, force=True, noprune=False)
    client.images.prune(filters={"dangling": True})


def layer_ids(client, ref: str) -> list[tuple[str, int]]:
    return [(h["Id"], h["Size"]) for h in client.api.history(ref)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("tags", nargs="*", default=list(img.DEFAULT_TAGS))
    p.add_argument("--cold", action="store_true")
    p.add_argument("--extra", metavar="TAG")
    p.add_argument("--ca-bundle")
    args = p.parse_args(argv)
    client = docker.from_env(timeout=3600)

    times = {}
    if args.cold:
        remove_all(client)
        times["cold build (base + shared + %d tags)" % len(args.tags)] = timed_build(args.tags, args.ca_bundle)
    times["warm rebuild (%d tags, nothing changed)" % len(args.tags)] = timed_build(args.tags, args.ca_bundle)
    tags = list(args.tags)
    if args.extra:
        times[f"extra tag {args.extra} on a warm engine"] = timed_build([args.extra], args.ca_bundle)
        tags.append(args.extra)

    refs = {t: f"{img.STACK_REPO}:{t}" for t in tags}
    hist = {t: layer_ids(client, r) for t, r in refs.items()}
    shared_ref = client.images.get(refs[tags[0]]).labels["stackhub.shared"]
    shared = dict(layer_ids(client, shared_ref))
    rows = []
    for t in tags:
        size = client.images.get(refs[t]).attrs["Size"]
        own = sum(s for i, s in hist[t] if i not in shared)
        rows.append((t, size, own))
    print("\n| tag | image size (uncompressed) | new bytes over the shared layer |\n|---|---|---|")
    for t, size, own in rows:
        print(f"| {t} | {size / 1e6:.0f} MB | {own / 1e6:.1f} MB |")
    print(f"\nshared image {shared_ref}: {client.images.get(shared_ref).attrs['Size'] / 1e6:.0f} MB")
    print("\n| build | seconds |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v:.0f} |")
    print(json.dumps({"sizes": rows, "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
