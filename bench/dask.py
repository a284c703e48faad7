"""Benchmark: the co-add workload (courses/dask-analysis) on 1 and 2 Dask workers against serial
numpy, the time a LocalCluster takes to start, and the sizes of the HPC exports against the image.

    python bench/dask.py [--image stackhub/lsst-stack:recommended] [--runs 3] [--exports DIR]

Each run is a fresh container limited like a *medium* server (2 cores, 4 GB, PYTHON_CPU_COUNT=2)
that executes the notebook headless (nbconvert, LSST kernel) with DASK_ANALYSIS_WORKERS set; the
notebook times its serial and its Dask part itself and prints a SUMMARY line. ``--exports DIR``:
where `stackhub images export ... --format sif,squashfs` wrote its files, for the size table.
Prints a Markdown table to paste into bench/RESULTS-dask.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "courses" / "dask-analysis" / "coadd-with-dask.ipynb"

RUN = """
cd /tmp && jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1200 \
  --output-dir /tmp --output run /nb/coadd-with-dask.ipynb >/tmp/log 2>&1 || { tail -30 /tmp/log; exit 1; }
python - <<'EOF'
import json
nb = json.load(open("/tmp/run.ipynb"))
text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
print(text.split("SUMMARY ", 1)[1].splitlines()[0])
EOF
"""

START = """
import json, time
t0 = time.perf_counter()
from dask.distributed import Client, LocalCluster
cluster = LocalCluster(); client = Client(cluster)
client.wait_for_workers(len(cluster.workers))
t = time.perf_counter() - t0
print(json.dumps({"start_s": round(t, 2), "workers": len(cluster.workers)}))
client.close(); cluster.close()
"""


def docker_run(image: str, script: list[str], env: dict[str, str]) -> str:
    cmd = ["docker", "run", "--rm", "--cpus", "2", "--memory", "4g", "-e", "PYTHON_CPU_COUNT=2",
           "-v", f"{NOTEBOOK.parent}:/nb:ro", "--entrypoint", "bash"]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    out = subprocess.run(cmd + [image, *script], capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"run failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="stackhub/lsst-stack:recommended")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--exports", type=Path, help="directory holding the .sif and .sqsh of the same image")
    args = p.parse_args()
    print(f"image {args.image}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for workers in (1, 2):
        got = [json.loads(docker_run(args.image, ["-lc", RUN], {"DASK_ANALYSIS_WORKERS": str(workers)}))
               for _ in range(args.runs)]
        for g in got:
            print(json.dumps(g), flush=True)
        serial = statistics.median(g["serial_s"] for g in got)
        dask = statistics.median(g["dask_s"] for g in got)
        rows.append((workers, serial, dask, statistics.median(g["speedup"] for g in got)))
    starts = [json.loads(docker_run(args.image, ["-lc", f"python - <<'EOF'\n{START}\nEOF"], {}))
              for _ in range(args.runs)]
    print("| workers | serial numpy (s, median) | dask (s, median) | speed-up (median) |")
    print("|---|---|---|---|")
    for workers, serial, dask, speedup in rows:
        print(f"| {workers} | {serial:.2f} | {dask:.2f} | {speedup:.2f}x |")
    print(f"\nLocalCluster() start (2 workers, until both are up): "
          f"{', '.join(str(s['start_s']) for s in starts)} s")
    size = json.loads(subprocess.run(["docker", "image", "inspect", args.image], capture_output=True, text=True,
                                     check=True).stdout)[0]["Size"]
    print(f"\n| artefact | size |\n|---|---|\n| Docker image (uncompressed) | {size / 1e6:.0f} MB |")
    if args.exports:
        for f in sorted(args.exports.iterdir()):
            if f.suffix in (".sif", ".sqsh", ".tar"):
                print(f"| {f.name} | {f.stat().st_size / 1e6:.0f} MB |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
