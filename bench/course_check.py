"""Time the course x tag check of the getting-started course, and how it grows with tags x notebooks.

    STACKHUB_CONFIG=... STACKHUB_STATE=... python bench/course_check.py [--tags a,b,c] [--shapes 1x1,1x6,3x6]

Against a running deployment (``stackhub up``): for each shape TAGSxNOTEBOOKS it publishes a course
with the first NOTEBOOKS notebooks of courses/getting-started (the helper files too) and checks it
on the first TAGS tags through the course service's API, and prints the wall clock of the check
and the per-tag times. Results: bench/RESULTS-course-check.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spawner.cli.client import client  # noqa: E402
from spawner.cli.courses import directory_tar  # noqa: E402
from spawner.core.names import COURSES_SERVICE  # noqa: E402


def course_with(notebooks: int, where: Path) -> Path:
    src = REPO / "courses" / "getting-started"
    books = sorted(src.glob("*.ipynb"))
    where.mkdir()
    for p in src.iterdir():
        if p.suffix != ".ipynb":
            shutil.copy(p, where / p.name)
    for i in range(notebooks):  # more than six: the course again, under other names
        p = books[i % len(books)]
        shutil.copy(p, where / (p.name if i < len(books) else f"{i + 1:02d}-again-{p.name}"))
    return where


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tags", default="w_2026_43,w_2026_42,v30_0_0")
    p.add_argument("--shapes", default="1x1,1x6,3x6")
    args = p.parse_args()
    tags = args.tags.split(",")
    api = client(COURSES_SERVICE)
    print(f"{'tags x notebooks':>17}  {'wall clock':>10}  per tag")
    for shape in args.shapes.split(","):
        n_tags, n_books = (int(x) for x in shape.split("x"))
        name = f"bench-check-{n_tags}x{n_books}"
        with tempfile.TemporaryDirectory() as tmp:
            src = course_with(n_books, Path(tmp) / "c")
            api("PUT", f"courses/{name}?{urlencode({'source': 'bench'})}", data=directory_tar(str(src)),
                content_type="application/x-tar", timeout=600)
        t0 = time.monotonic()
        job = api("POST", "checks", {"course": name, "tags": tags[:n_tags]})
        while not job["done"]:
            time.sleep(1)
            job = api("GET", f"checks/{job['id']}")
        wall = time.monotonic() - t0
        per = ", ".join(f"{t['tag']} {t['state']} {t['seconds']:.0f}s" for t in job["tags"])
        print(f"{shape:>17}  {wall:>9.0f}s  {per}", flush=True)
        api("DELETE", f"courses/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
