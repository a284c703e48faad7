#!/usr/bin/env python3
"""stackhub-course-sync: bring the published courses into ``~/notebooks/<course>/``.

Runs inside a user's container as the user: from ``stackhub-start`` before JupyterLab starts, from
a terminal (``stackhub-course-sync``), and from the course service's "sync now" (``docker exec``).
Standard library only, so it runs with whatever Python the stack image has. The hub installs this
file into the courses volume (``<courses>/.tools/stackhub-course-sync``), so the program and the
layout it reads always come from the same hub version.

The courses volume (read-only here, ``$STACKHUB_COURSES``, default ``/opt/stackhub/courses``)::

    <course>/current.json            what is published: version, publication id, restore, files
    <course>/versions/<version>/...  the files of one version

What was delivered is kept per course in ``~/notebooks/.stackhub/<course>.json`` (hash of every
file as it was written), so a later sync can tell the user's edits from the course's files:

- a new upstream file is added;
- an upstream change replaces a file the user has not modified;
- a file the user modified is kept and the new upstream arrives beside it as
  ``<name>.upstream<.ext>``, with a line in ``~/notebooks/.stackhub/sync.log``;
- a file the user deleted stays deleted, unless the instructor published with "restore" (each such
  publication restores once);
- a file the course no longer has is removed if the user never changed it, and kept otherwise.

``~/notebooks/.stackhub/status.json`` says which version of each course this home has; the course
service reads it to count users per version.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT_ENV = "STACKHUB_COURSES"
DEFAULT_ROOT = "/opt/stackhub/courses"
ON_START_ENV = "STACKHUB_COURSE_SYNC_ON_START"
BUDGET_ENV = "STACKHUB_COURSE_SYNC_SECONDS"
HOME_JSON_MAX = 16 * 2**20  # a manifest or status file in the home larger than this is not trusted
CURRENT = "current.json"
VERSIONS = "versions"
TOOLS_DIR = ".tools"
TOOL_NAME = "stackhub-course-sync"
STATE_DIR = ".stackhub"
STATUS_FILE = "status.json"
LOG_FILE = "sync.log"
MANIFEST_VERSION = 1

# what a plan does with one path
ADD = "add"                # new upstream file
UPDATE = "update"          # upstream changed, user's copy untouched: replaced
SAME = "same"              # user's copy already equals upstream
KEEP = "keep"              # user's edit, upstream unchanged since it was delivered
BESIDE = "beside"          # user's edit and a new upstream: upstream written to <name>.upstream<ext>
DELETED = "deleted"        # user deleted a delivered file: left deleted
RESTORE = "restore"        # user deleted it, the publication says restore: brought back
RETRACT = "retract"        # the course dropped an untouched file: removed
ORPHAN = "orphan"          # the course dropped a file the user changed: kept, forgotten
GONE = "gone"              # the course dropped a file the user deleted too: forgotten
WRITES = (ADD, UPDATE, RESTORE)


@dataclass(frozen=True)
class Action:
    kind: str
    path: str
    upstream: str | None = None  # hash the manifest records afterwards (None: forget the path)

    @property
    def note(self) -> str | None:
        if self.kind == BESIDE:
            return f"kept your edit of {self.path}; the new course version is in {upstream_name(self.path)}"
        if self.kind == DELETED:
            return f"{self.path} was deleted here, so it was not brought back"
        if self.kind == ORPHAN:
            return f"{self.path} is no longer in the course; your edited copy is kept"
        return None


def upstream_name(path: str) -> str:
    """``dir/A.ipynb`` -> ``dir/A.upstream.ipynb``; ``Makefile`` -> ``Makefile.upstream``."""
    head, base = posixpath.split(path)
    stem, ext = posixpath.splitext(base)  # ".env" -> (".env", "")
    return posixpath.join(head, f"{stem}.upstream{ext}")


def plan(upstream: dict[str, str], delivered: dict[str, str], local: dict[str, str | None],
         restore: bool) -> list[Action]:
    """The merge rules, as data. Pure.

    ``upstream``: path -> hash of the published version; ``delivered``: path -> hash last written
    by a sync (the manifest); ``local``: path -> hash of the user's file, or None if missing
    (needed for every path of ``upstream`` and ``delivered``); ``restore``: bring back deleted
    files (the publication asks for it and this home has not had it yet).
    """
    actions = []
    for path in sorted(upstream):
        up, was, have = upstream[path], delivered.get(path), local.get(path)
        if have is None:
            if was is None:
                actions.append(Action(ADD, path, up))
            elif restore:
                actions.append(Action(RESTORE, path, up))
            else:
                actions.append(Action(DELETED, path, was))
        elif have == up:
            actions.append(Action(SAME, path, up))
        elif was is not None and have == was:
            actions.append(Action(UPDATE, path, up))
        elif was is not None and up == was:
            actions.append(Action(KEEP, path, was))
        else:  # edited by the user (or theirs before the course came), and upstream differs
            actions.append(Action(BESIDE, path, up))
    for path in sorted(set(delivered) - set(upstream)):
        have = local.get(path)
        if have is None:
            actions.append(Action(GONE, path))
        elif have == delivered[path]:
            actions.append(Action(RETRACT, path))
        else:
            actions.append(Action(ORPHAN, path))
    return actions


# --- files ---------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_hash(path: Path, entry: dict | None) -> str | None:
    """Hash of the user's file (None if missing); unchanged size+mtime reuses the manifest's hash."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not path.is_file():
        return "not-a-file"
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    return sha256_file(path)


def copy_atomic(src: Path, dest: Path):
    """Write ``dest`` from ``src`` through a temporary file, so a reader never sees half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.stackhub-tmp"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def write_json(path: Path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return default


def read_home_json(path: Path, default=None, limit: int = HOME_JSON_MAX):
    """A JSON file of the home (the user may have put anything there): a regular file, no symlink,
    at most ``limit`` bytes, of the same type as ``default``; else ``default``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return default
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return default
        raw = f.read(limit + 1)
    if len(raw) > limit:
        return default
    try:
        data = json.loads(raw)
    except ValueError:
        return default
    return data if default is None or isinstance(data, type(default)) else default


# --- one course into one home --------------------------------------------------------------------


@dataclass
class CourseResult:
    course: str
    version: str
    previous: str | None
    counts: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    unfinished: int = 0  # files left for the next sync (the time budget ran out)

    def summary(self) -> str:
        done = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()) if k not in (SAME, KEEP, GONE))
        was = f" (was {self.previous})" if self.previous and self.previous != self.version else ""
        left = f"; {self.unfinished} files left for the next sync (time budget)" if self.unfinished else ""
        return f"{self.course}: version {self.version}{was}" + (f": {done}" if done else ": up to date") + left


def published(root: Path) -> list[tuple[str, dict]]:
    """(course, current.json) of every published course, by name."""
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        current = read_json(d / CURRENT)
        if isinstance(current, dict) and current.get("version") and isinstance(current.get("files"), dict):
            out.append((d.name, current))
    return out


def sync_course(root: Path, notebooks: Path, course: str, current: dict,
                deadline: float | None = None) -> CourseResult:
    state = notebooks / STATE_DIR
    manifest_path = state / f"{course}.json"
    manifest = read_home_json(manifest_path, {})
    entries = manifest.get("files", {}) if manifest.get("format") == MANIFEST_VERSION else {}
    if not isinstance(entries, dict):
        entries = {}
    entries = {p: e for p, e in entries.items() if isinstance(e, dict) and isinstance(e.get("sha256"), str)}
    delivered = {p: e["sha256"] for p, e in entries.items()}
    upstream = current["files"]
    dest = notebooks / course
    local = {p: local_hash(dest / p, entries.get(p)) for p in set(upstream) | set(delivered)}
    publication = current.get("publication")
    restore = bool(current.get("restore")) and manifest.get("restored") != publication
    actions = plan(upstream, delivered, local, restore)

    src = root / course / VERSIONS / current["version"]
    result = CourseResult(course, current["version"], manifest.get("version"))
    new_entries = {}
    for a in actions:
        if deadline is not None and time.monotonic() > deadline:  # out of time: the next sync goes on
            if a.path in entries:
                new_entries[a.path] = entries[a.path]
            result.unfinished += 1
            continue
        result.counts[a.kind] = result.counts.get(a.kind, 0) + 1
        target = dest / a.path
        try:
            if a.kind in WRITES:
                copy_atomic(src / a.path, target)
            elif a.kind == BESIDE:
                copy_atomic(src / a.path, dest / upstream_name(a.path))
            elif a.kind == RETRACT:
                target.unlink()
        except OSError as e:  # one file in the way (say a directory of the same name) spoils no other
            result.notes.append(f"could not write {a.path}: {e.strerror or e}")
            if a.path in entries:
                new_entries[a.path] = entries[a.path]
            continue
        if a.note:
            result.notes.append(a.note)
        if a.upstream is None:
            continue
        if a.kind in WRITES or a.kind == SAME:
            st = target.stat()
            new_entries[a.path] = {"sha256": a.upstream, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        else:  # the user's file is not the delivered one: no stat shortcut for it
            new_entries[a.path] = {"sha256": a.upstream}
    write_json(manifest_path, {
        "format": MANIFEST_VERSION,
        "course": course,
        "version": current["version"],
        "publication": publication,
        "restored": publication if restore else manifest.get("restored"),
        "synced": now(),
        "files": new_entries,
    })
    return result


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Lock:
    """One sync per home at a time (spawn, terminal and "sync now" may meet)."""

    def __init__(self, path: Path, timeout: float = 60):
        self.path, self.timeout = path, timeout

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "w")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another sync holds {self.path}") from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.f.close()


def sync_all(root: Path, home: Path, courses: list[str] | None = None, log=print,
             budget: float | None = None) -> list[CourseResult]:
    """Sync every published course (or ``courses``); stop copying after ``budget`` seconds."""
    deadline = time.monotonic() + budget if budget else None
    notebooks = home / "notebooks"
    state = notebooks / STATE_DIR
    results = []
    with Lock(state / ".lock", timeout=min(60, budget or 60)):
        status = read_home_json(state / STATUS_FILE, {})
        for course, current in published(root):
            if courses and course not in courses:
                continue
            res = sync_course(root, notebooks, course, current, deadline)
            results.append(res)
            if not res.unfinished:  # a partly delivered version is not this home's version yet
                status[course] = {"version": res.version, "publication": current.get("publication"), "synced": now()}
            log(res.summary())
            for note in res.notes:
                log(f"  {note}")
        write_json(state / STATUS_FILE, status)
        with open(state / LOG_FILE, "a") as f:
            for res in results:
                f.write(f"{now()} {res.summary()}\n")
                for note in res.notes:
                    f.write(f"{now()}   {note}\n")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=TOOL_NAME, description="Bring the published courses into ~/notebooks/<course>/ "
                                "without overwriting your edits (see ~/notebooks/.stackhub/sync.log).")
    p.add_argument("courses", nargs="*", help="only these courses (default: all published)")
    p.add_argument("--root", default=os.environ.get(ROOT_ENV, DEFAULT_ROOT), help="where the courses are mounted")
    p.add_argument("--home", default=os.environ.get("HOME") or str(Path.home()), help="the home to sync into")
    p.add_argument("--quiet", action="store_true", help="print nothing (the log file still gets every line)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (for the course service)")
    p.add_argument("--on-start", action="store_true", help=f"called by stackhub-start; {ON_START_ENV}=0 turns it off")
    p.add_argument("--budget", type=float, default=float(os.environ.get(BUDGET_ENV) or 0),
                   help=f"stop copying after this many seconds; the next sync goes on (default ${BUDGET_ENV}, 0: none)")
    args = p.parse_args(argv)
    if args.on_start and os.environ.get(ON_START_ENV, "1") == "0":
        return 0
    root, home = Path(args.root), Path(args.home)
    if not root.is_dir():
        if not args.quiet:
            print(f"{TOOL_NAME}: no courses at {root}", file=sys.stderr)
        return 0 if args.on_start else 1
    quiet = args.quiet or args.json
    t0 = time.monotonic()
    try:
        results = sync_all(root, home, args.courses or None, log=(lambda m: None) if quiet else print,
                           budget=args.budget or None)
    except (OSError, TimeoutError) as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        elif not args.quiet:
            print(f"{TOOL_NAME}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({
            "ok": True, "seconds": round(time.monotonic() - t0, 3),
            "courses": {r.course: {"version": r.version, "previous": r.previous, "counts": r.counts,
                                   "notes": r.notes, "unfinished": r.unfinished} for r in results},
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
