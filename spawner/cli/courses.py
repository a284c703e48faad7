"""``stackhub course publish|list|remove|sync|check``: instructors' commands, through the course service.

They call the ``stackhub-courses`` REST API (``/services/stackhub-courses/api/``) with an
instructor's token (``--token`` or ``$STACKHUB_TOKEN``; make one on the hub's Token page) or, by
default, the deployment's admin token. SOURCE may be:

- a git URL (https://; others only where the operator allows them): the hub clones it at ``--ref``;
- a local git repository: its commits are sent as a git bundle and the hub checks out ``--ref``
  (default: its HEAD); uncommitted changes are not published;
- a local directory: its files are sent as they are (``.git``, ``.ipynb_checkpoints`` and
  ``__pycache__`` left out).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from spawner.cli.client import REPO, ApiError, client, guard, table
from spawner.courses.publish import SKIP_DIRS, CourseError, validate_name
from spawner.core.names import COURSES_SERVICE


LOOKS_LIKE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$|^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:\S+$")


def classify(source: str) -> tuple[str, str]:
    """("git", URL) | ("bundle", repo dir) | ("directory", dir). Pure, apart from looking at the disk."""
    if LOOKS_LIKE_URL.match(source):  # the hub decides which URLs it accepts
        return "git", source
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ApiError(f"{source}: not a git URL and not a directory")
    if (path / ".git").exists():
        return "bundle", str(path.resolve())
    return "directory", str(path.resolve())


def git_bundle(repo: str) -> bytes:
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain"], capture_output=True, text=True)
    if dirty.stdout.strip():
        print(f"note: {repo} has uncommitted changes; only commits are published", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "course.bundle"
        proc = subprocess.run(["git", "-C", repo, "bundle", "create", "-q", str(out), "HEAD", "--branches", "--tags"],
                              capture_output=True, text=True)
        if proc.returncode:
            raise ApiError(f"git bundle of {repo} failed: {proc.stderr.strip()[-300:]}")
        return out.read_bytes()


def directory_tar(root: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS)
            for n in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                full = os.path.join(dirpath, n)
                tar.add(full, arcname=os.path.relpath(full, root), recursive=False)
    return buf.getvalue()


def publish(args) -> dict:
    try:  # the service checks too; "." and ".." could not even travel in a URL path
        validate_name(args.name)
    except CourseError as e:
        raise ApiError(str(e)) from None
    api = client(COURSES_SERVICE, args.token or os.environ.get("STACKHUB_TOKEN"))
    name = quote(args.name, safe="")
    kind, where = classify(args.source)
    if kind == "git":
        return api("PUT", f"courses/{name}", {"git": where, "ref": args.ref, "restore": args.restore}, timeout=600)
    if kind == "directory" and args.ref:
        raise ApiError(f"{where} is not a git repository, so --ref does not apply")
    query = {"source": where, "restore": "1" if args.restore else "0"}
    if kind == "bundle":
        query["ref"] = args.ref or "HEAD"
        data, ctype = git_bundle(where), "application/x-git-bundle"
    else:
        data, ctype = directory_tar(where), "application/x-tar"
    return api("PUT", f"courses/{name}?{urlencode(query)}", data=data, content_type=ctype, timeout=600)


SHIPPED_DIR = REPO / "courses"
SHIPPED_MARKER = "shipped-courses.json"


def publish_shipped(cfg, state: Path, log=print, api=None) -> list[str]:
    """Publish the courses shipped in the repository (``courses.shipped``) once: at the first ``up``.

    ``<state>/shipped-courses.json`` remembers which were published, so a course an instructor
    removed or replaced is left as they made it. Returns the names published now.
    """
    if not cfg.courses.enabled or not cfg.courses.shipped:
        return []
    marker = state / SHIPPED_MARKER
    try:
        done = set(json.loads(marker.read_text()))
    except (OSError, ValueError, TypeError):
        done = set()
    todo = [n for n in cfg.courses.shipped if n not in done]
    if not todo:
        return []
    api = api or client(COURSES_SERVICE)
    present = {c["course"] for c in api("GET", "courses")["courses"]}
    published = []
    for name in todo:
        source = SHIPPED_DIR / name
        if name not in present:
            if not source.is_dir():
                raise ApiError(f"courses.shipped names {name!r}, but {source} does not exist")
            c = api("PUT", f"courses/{quote(name, safe='')}?{urlencode({'source': f'shipped: courses/{name}'})}",
                    data=directory_tar(str(source)), content_type="application/x-tar", timeout=600)
            log(f"course {name}: published version {c['version']} ({c['files']} files) from courses/{name}")
            published.append(name)
        done.add(name)
    marker.write_text(json.dumps(sorted(done)) + "\n")
    return published


def print_matrix(course: str, version: str, checks: dict):
    """The course x tag matrix: one row per tag, then each failing notebook with its cell and error."""
    from spawner.courses.checks import failures

    rows = []
    for tag, r in checks.items():
        nbs = r.get("notebooks") or []
        passed = sum(1 for n in nbs if n.get("state") == "passed")
        detail = f"{passed}/{r.get('total') if r.get('total') is not None else len(nbs)} notebooks passed" if nbs else (r.get("error") or "")
        rows.append([tag, r.get("state", "not checked"), detail[:80],
                     f"{r['seconds']:.0f}s" if r.get("seconds") is not None else "", r.get("checked") or ""])
    print(f"{course} version {version}:")
    table(rows, ["TAG", "RESULT", "", "TIME", "CHECKED"])
    for tag, r in checks.items():
        for n in failures(r):
            cell = f", cell {n['cell']}" if n.get("cell") else ""
            print(f"  {tag}: {n['notebook']}{cell}: {n['state']}: {n.get('error') or ''}")
        if r.get("state") == "error" and r.get("error"):
            print(f"  {tag}: error: {r['error']}")


def check(args, api) -> int:
    """``stackhub course check NAME [--tags a,b]``: run the check, show progress, print the matrix."""
    if args.show:
        data = api("GET", f"courses/{quote(args.name, safe='')}/checks")
        print_matrix(args.name, data["version"], data["checks"])
        return 1 if any(r.get("state") not in ("passed",) for r in data["checks"].values()) else 0
    tags = [t.strip() for t in (args.tags or "").split(",") if t.strip()] or None
    job = api("POST", "checks", {"course": args.name, "tags": tags})
    print(f"checking {job['course']} version {job['version']} ({job['notebooks']} notebooks) on "
          f"{', '.join(t['tag'] for t in job['tags'])}, a few at a time ...", flush=True)
    seen = {}
    while True:
        for t in job["tags"]:
            line = t["state"] + (f" ({len(t['notebooks'])}/{t['total']}: {t['current']})" if t.get("current") else "")
            if seen.get(t["tag"]) != line:
                seen[t["tag"]] = line
                print(f"  {t['tag']}: {line}", flush=True)
        if job["done"] or args.no_wait:
            break
        time.sleep(2)
        job = api("GET", f"checks/{job['id']}")
    if args.no_wait:
        print(f"check {job['id']} runs on; see the course page or `stackhub course check {args.name} --show`")
        return 0
    print(f"done in {job['seconds']:.0f} s")
    print_matrix(job["course"], job["version"], {t["tag"]: t for t in job["tags"]})
    return 0 if all(t["state"] == "passed" for t in job["tags"]) else 1


def owners_text(owners: dict) -> str:
    shared = owners.get("shared") or []
    return (owners.get("owner") or "admins only") + (f" ({', '.join(shared)})" if shared else "")


def cmd_course(args) -> int:
    if args.course_command == "publish":
        c = publish(args)
        print(f"{c['course']}: published version {c['version']} ({c['files']} files"
              + (", restoring deleted files" if c["restore"] else "") + ")")
        print("attendees get it when their server starts; `stackhub course sync` updates running servers now")
        return 0
    api = client(COURSES_SERVICE, args.token or os.environ.get("STACKHUB_TOKEN"))
    if args.course_command == "list":
        data = api("GET", "courses")
        rows = [[c["course"], c["version"], str(c["files"]), c["published"], c["publisher"],
                 owners_text(c.get("owners") or {}),
                 "; ".join(f"{v}: {n}" for v, n in c["users"].items()) or "-"] for c in data["courses"]]
        table(rows, ["COURSE", "VERSION", "FILES", "PUBLISHED", "BY", "OWNER (SHARED WITH)", "USERS PER VERSION"])
    elif args.course_command == "share":
        path = f"courses/{quote(args.name, safe='')}/owners"
        body = {"shared": args.users} if args.owner is None else {"shared": args.users, "owner": args.owner}
        print(f"{args.name}: {owners_text(api('PUT', path, body))}")
    elif args.course_command == "remove":
        api("DELETE", f"courses/{quote(args.name, safe='')}")
        print(f"{args.name}: removed (attendees keep their copies)")
    elif args.course_command == "check":
        return check(args, api)
    elif args.course_command == "sync":
        data = api("POST", "sync", {"users": args.user or None, "courses": args.courses}, timeout=600)
        print(f"synced in {data['synced']} running servers in {data['seconds']} s"
              + (f"; failed: {', '.join(data['failed'])}" if data["failed"] else ""))
        for user in data["failed"]:
            print(f"  {user}: {data['users'][user].get('error')}", file=sys.stderr)
        return 1 if data["failed"] else 0
    return 0


def register(sub):
    """Add ``stackhub course ...`` to the ``stackhub`` parser."""
    course = sub.add_parser("course", help="publish, list, remove and sync courses (instructors' notebooks)")
    course.add_argument("--token", help="an instructor's API token (default: $STACKHUB_TOKEN, else the admin token)")
    csub = course.add_subparsers(dest="course_command", required=True)
    pub = csub.add_parser("publish", help="publish or update course NAME from SOURCE (git URL, local repository or directory)")
    pub.add_argument("name", metavar="NAME")
    pub.add_argument("source", metavar="SOURCE")
    pub.add_argument("--ref", help="branch, tag or commit of a git source (default: its HEAD)")
    pub.add_argument("--restore", action="store_true", help="bring back files attendees deleted (once)")
    csub.add_parser("list", help="courses, their version, and how many users have which version")
    rm = csub.add_parser("remove", help="unpublish NAME (attendees keep their copies)")
    rm.add_argument("name", metavar="NAME")
    sh = csub.add_parser("share", help="let these instructors change NAME too (the owner or an admin; "
                                       "replaces the list: none given shares it with nobody)")
    sh.add_argument("name", metavar="NAME")
    sh.add_argument("users", nargs="*", metavar="USER")
    sh.add_argument("--owner", help="give the course to this user (admins only)")
    sy = csub.add_parser("sync", help="sync now in every running server (or --user ...)")
    sy.add_argument("courses", nargs="*", metavar="COURSE", help="only these courses")
    sy.add_argument("--user", action="append", help="only this user's server (repeatable)")
    ck = csub.add_parser("check", help="run NAME's notebooks headless on stack tags; print the matrix (exit 1 if any fails)")
    ck.add_argument("name", metavar="NAME")
    ck.add_argument("--tags", help="comma-separated stack tags (default: every stack tag), e.g. w_2026_43,v30_0_0")
    ck.add_argument("--no-wait", action="store_true", help="start the check and return (progress on the course page)")
    ck.add_argument("--show", action="store_true", help="print the kept results of the current version; run nothing")
    course.set_defaults(func=guard(cmd_course))
