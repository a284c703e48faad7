"""``stackhub-course-check``: run a course's notebooks headless, in a throwaway container of one tag.

The course service installs this file into the courses volume (``.tools/``) next to the sync
program and starts it, as the attendees' uid with an empty home and ``/data``, in a container of
the stack tag under test. Standard library and nbclient only (nbclient comes with JupyterLab in
every stack image), so the program always matches the hub that starts it.

It copies the published version into ``~/notebooks/<course>/`` (as an attendee's server would
get it), then runs every notebook in name order with nbclient, each in a new kernel of the kind
the notebook names (``lsst`` by default), in its own folder. It prints one JSON line per event on
stdout, so the service can show progress while it runs::

    {"event": "start", "notebook": "01-x.ipynb", "index": 0, "total": 6}
    {"event": "done", "notebook": "01-x.ipynb", "state": "passed", "seconds": 3.1}
    {"event": "done", "notebook": "02-y.ipynb", "state": "failed", "cell": 7, "error": "KeyError: 'x'", ...}
    {"event": "end"}

A cell that runs longer than ``--timeout`` seconds is stopped (its kernel is shut down) and the
notebook is reported ``timeout`` with that cell; the service also ends the whole container at its
own deadline, so nothing is left running whatever the notebook does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

TOOL_NAME = "stackhub-course-check"
ERROR_MAX = 2000      # characters of an error kept in a result
SKIP_PARTS = {".ipynb_checkpoints", "__pycache__", ".git"}


def emit(event: dict):
    print(json.dumps(event), flush=True)


def notebooks(root: Path) -> list[Path]:
    """The notebooks of a course, in name order; ``.upstream`` copies and checkpoints left out."""
    out = []
    for p in sorted(root.rglob("*.ipynb")):
        rel = p.relative_to(root)
        if any(part in SKIP_PARTS or part.startswith(".") for part in rel.parts) or ".upstream." in p.name:
            continue
        out.append(p)
    return out


def short(text: str, limit: int = ERROR_MAX) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 15] + " ... (cut)"


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def code_cell_number(nb, index: int) -> int:
    """1-based number of code cell ``index`` among the notebook's code cells (what people count)."""
    return sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")


def run_notebook(path: Path, *, timeout: int, kernel: str | None) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    t0 = time.monotonic()
    result = {"notebook": None, "state": "passed", "cell": None, "error": None}
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 (a broken file is the notebook's failure)
        return {**result, "state": "failed", "error": short(f"not a readable notebook: {e}"),
                "seconds": round(time.monotonic() - t0, 2)}
    name = kernel or (nb.metadata.get("kernelspec") or {}).get("name") or "lsst"
    client = NotebookClient(nb, timeout=timeout, kernel_name=name, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}}, startup_timeout=120)
    current = {"index": None}

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    client.on_cell_start = on_cell_start
    try:
        client.execute()
    except CellTimeoutError:
        result.update(state="timeout", error=f"the cell ran longer than {timeout} s and was stopped")
    except DeadKernelError as e:
        result.update(state="failed", error=short(f"the kernel died: {e}"))
    except CellExecutionError as e:
        result.update(state="failed", error=short(f"{e.ename}: {e.evalue}" if getattr(e, "ename", None) else str(e)))
        if getattr(e, "traceback", None):
            result["traceback"] = short(strip_ansi(e.traceback), 4000)
    except Exception as e:  # noqa: BLE001 (no such kernel, ...)
        result.update(state="failed", error=short(f"{type(e).__name__}: {e}"))
    if result["state"] != "passed" and current["index"] is not None:
        i = current["index"]
        result["cell"] = code_cell_number(nb, i)
        result["source"] = short("".join(nb.cells[i].source), 600)
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=TOOL_NAME, description="Run a published course's notebooks headless "
                                "and print one JSON line per notebook.")
    p.add_argument("source", help="the published version's folder (read-only)")
    p.add_argument("--course", required=True, help="the course's name (its folder under ~/notebooks/)")
    p.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    p.add_argument("--kernel", help="kernel for every notebook (default: the one each notebook names, else lsst)")
    args = p.parse_args(argv)
    home = Path(os.environ.get("HOME") or "/tmp")
    dest = home / "notebooks" / args.course
    try:
        shutil.copytree(args.source, dest, ignore=shutil.ignore_patterns(*SKIP_PARTS))
    except OSError as e:
        emit({"event": "error", "error": f"cannot copy the course into the home: {e}"})
        return 1
    found = notebooks(dest)
    emit({"event": "begin", "total": len(found), "notebooks": [str(n.relative_to(dest)) for n in found]})
    for i, path in enumerate(found):
        rel = str(path.relative_to(dest))
        emit({"event": "start", "notebook": rel, "index": i, "total": len(found)})
        result = run_notebook(path, timeout=args.timeout, kernel=args.kernel)
        emit({"event": "done", **result, "notebook": rel, "index": i})
    emit({"event": "end"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
