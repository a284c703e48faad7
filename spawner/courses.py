"""Publishing courses: fetch a source, check it, and publish it atomically into the courses volume.

A course is a name and a source: a git repository (a URL the hub clones, or a bundle the CLI
uploads from a local repository) at a ref, or a directory (uploaded as a tar). Publishing
stages the files under ``<root>/.staging/``, checks them, then renames them into place as
``<root>/<course>/versions/<version>/`` and replaces ``<root>/<course>/current.json``; readers (the
sync program in users' containers) see the old publication or the new one, never a mix. Nothing
here touches a home: bad input fails before anything is published.

The layout and the file format are shared with ``coursesync`` (the program users' containers run).
Git is the real ``git`` binary, with no prompts and a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from . import coursesync
from .coursesync import CURRENT, TOOL_NAME, TOOLS_DIR, VERSIONS, now, read_json, sha256_file, write_json

NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REF = re.compile(r"^[A-Za-z0-9._/@{}^~-]{1,200}$")
_URL = re.compile(r"^(https?|git|ssh)://[^\s]+$|^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:[^\s]+$")
SKIP_DIRS = {".git", ".ipynb_checkpoints", "__pycache__"}
STAGING = ".staging"
HISTORY = "history.json"
_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


class CourseError(Exception):
    """A request that cannot be done; ``status`` is the HTTP status the service answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def validate_name(name: str) -> str:
    if not name:
        raise CourseError("a course needs a name (" + NAME_RULE + ")")
    if "/" in name or "\\" in name:
        raise CourseError(f"course name {name!r} must not contain '/': {NAME_RULE}")
    if ".." in name:
        raise CourseError(f"course name {name!r} must not contain '..': {NAME_RULE}")
    if not _NAME.match(name):
        raise CourseError(f"course name {name!r} is not allowed: {NAME_RULE}")
    return name


def validate_ref(ref: str | None) -> str:
    if ref is None or ref == "":
        return "HEAD"
    if ref.startswith("-") or ".." in ref or not _REF.match(ref):
        raise CourseError(f"git ref {ref!r} is not a branch, tag or commit name")
    return ref


def validate_url(url: str) -> str:
    if not url or url.startswith("-") or not _URL.match(url):
        raise CourseError(
            f"git source {url!r} must be an https://, http://, git:// or ssh:// URL (or user@host:path); "
            "to publish a local repository or directory use `stackhub course publish NAME PATH`, which uploads it"
        )
    return url


# --- git -----------------------------------------------------------------------------------------


def _git(args: list[str], *, cwd: Path | None = None, timeout: float = 120, stdout=subprocess.PIPE):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd or "/tmp"),
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
        "GIT_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=15",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise CourseError("git is not installed where the course service runs", 500) from None
    except subprocess.TimeoutExpired:
        raise CourseError(f"git {args[0]} took longer than {timeout:.0f} s; is the repository reachable?", 504) from None


def _git_message(proc) -> str:
    lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:", "ERROR"))]
    return (fatal or lines or ["(no message)"])[-1][:300]


def clone(source: str, dest: Path, timeout: float = 120):
    """Clone ``source`` (URL or bundle file) into ``dest`` without a checkout."""
    proc = _git(["clone", "--quiet", "--no-checkout", "--no-recurse-submodules", "--", source, str(dest)],
                timeout=timeout)
    if proc.returncode:
        raise CourseError(f"cannot fetch the git repository {_display(source)}: {_git_message(proc)}")


def _display(source: str) -> str:
    return "(uploaded bundle)" if source.startswith("/") else source


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` names (branch, tag or commit); unknown refs list what there is."""
    for candidate in (ref, f"origin/{ref}", f"refs/tags/{ref}"):
        proc = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], cwd=repo)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
    names = _git(["for-each-ref", "--format=%(refname:short)", "refs/remotes", "refs/tags", "refs/heads"], cwd=repo)
    known = sorted({n.removeprefix("origin/") for n in names.stdout.decode().split() if n != "origin/HEAD"})
    raise CourseError(f"unknown git ref {ref!r}; the repository has: {', '.join(known[:20]) or 'no branches'}")


def git_tree(repo: Path, commit: str, dest: Path, *, max_bytes: int, timeout: float = 120):
    """Extract the tree of ``commit`` into ``dest`` through ``git archive`` and the tar checks."""
    proc = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                         "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo)})
    try:
        extract_tar(proc.stdout, dest, max_bytes=max_bytes)
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        if proc.wait(timeout=timeout):
            raise CourseError(f"git archive failed: {err.decode(errors='replace').strip()[:300]}")


# --- trees ---------------------------------------------------------------------------------------


def _inside(target: str, member_dir: PurePosixPath) -> bool:
    """Does a link at ``member_dir`` to ``target`` stay inside the tree?"""
    if target.startswith("/"):
        return False
    parts = []
    for part in (member_dir / target).parts:
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return True


def extract_tar(fileobj: IO[bytes], dest: Path, *, max_bytes: int):
    """Extract an uploaded or archived tree into ``dest``, refusing anything that leaves it.

    Absolute names, ``..``, devices, and links pointing outside the tree are errors (nothing of
    the tree is published then). Counts bytes as it goes: a tree larger than ``max_bytes`` stops.
    """
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for m in tar:
                name = PurePosixPath(m.name)
                if name.is_absolute() or ".." in name.parts:
                    raise CourseError(f"{m.name}: file names must stay inside the course")
                if any(p in SKIP_DIRS for p in name.parts) or m.name in ("pax_global_header",):
                    continue
                if m.islnk():
                    raise CourseError(f"{m.name} is a hard link: not supported, use a copy")
                if m.issym():
                    if not _inside(m.linkname, name.parent):
                        raise CourseError(f"{m.name} is a symlink to {m.linkname}, outside the course: refused")
                elif not (m.isfile() or m.isdir()):
                    raise CourseError(f"{m.name} is neither a file, a directory nor a symlink: refused")
                total += m.size
                if total > max_bytes:
                    raise CourseError(f"the course is larger than the limit of {max_bytes // 2**20} MiB", 413)
                if hasattr(tarfile, "data_filter"):
                    tar.extract(m, dest, filter="data")
                else:  # pragma: no cover (Python without PEP 706)
                    tar.extract(m, dest)
    except _FILTER_ERRORS as e:
        raise CourseError(f"refused: {e}") from None
    except tarfile.TarError as e:
        raise CourseError(f"not a readable tar archive: {e}") from None


def check_tree(root: Path) -> dict[str, str]:
    """Check a staged tree and return path -> sha256 of every file.

    Symlinks to files inside the tree become copies (a home gets plain files); symlinks that leave
    the tree, dangle or name a directory are refused. Files are made world-readable.
    """
    root_real = root.resolve()
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if n not in SKIP_DIRS]
        for n in list(dirnames) + filenames:
            p = d / n
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                target = Path(os.path.realpath(p))
                if target != root_real and root_real not in target.parents:
                    raise CourseError(f"{rel} is a symlink to {os.readlink(p)}, outside the course: refused")
                if not target.exists():
                    raise CourseError(f"{rel} is a symlink to {os.readlink(p)}, which does not exist")
                if target.is_dir():
                    raise CourseError(f"{rel} is a symlink to a directory: not supported, use a real directory")
                p.unlink()
                shutil.copyfile(target, p)
        for n in filenames:
            p = d / n
            mode = p.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise CourseError(f"{p.relative_to(root).as_posix()} is not a regular file: refused")
            os.chmod(p, 0o644)
            files[p.relative_to(root).as_posix()] = sha256_file(p)
        for n in dirnames:
            os.chmod(d / n, 0o755)
    os.chmod(root, 0o755)
    if not files:
        raise CourseError("the source holds no files to publish")
    return files


def content_version(files: dict[str, str]) -> str:
    h = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()
    return f"c{h[:12]}"


# --- the store -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a publication comes from: ``kind`` is git (URL), bundle (uploaded repo) or directory."""

    kind: str
    location: str  # URL, or a description of the upload
    ref: str | None = None


class CourseStore:
    """The courses volume as the course service sees it (read-write)."""

    def __init__(self, *, root: Path, keep_versions: int = 3, max_bytes: int = 2**30, git_timeout: float = 120):
        self.root = root
        self.keep_versions = keep_versions
        self.max_bytes = max_bytes
        self.git_timeout = git_timeout

    # reading

    def current(self, name: str) -> dict | None:
        return read_json(self.root / validate_name(name) / CURRENT)

    def list(self) -> list[dict]:
        out = []
        for name, current in coursesync.published(self.root):
            info = {k: v for k, v in current.items() if k != "files"}
            info["files"] = len(current["files"])
            info["history"] = read_json(self.root / name / HISTORY, [])
            out.append(info)
        return out

    # writing

    def install_tool(self):
        """Put the sync program where users' containers find it (``<mount>/.tools/``)."""
        target = self.root / TOOLS_DIR / TOOL_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        os.chmod(self.root, 0o755)
        tmp = target.parent / f".{TOOL_NAME}.tmp"
        shutil.copyfile(coursesync.__file__, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)

    def _staging(self) -> Path:
        d = self.root / STAGING / secrets.token_hex(8)
        d.mkdir(parents=True)
        return d

    def stage_git(self, staging: Path, source: str, ref: str | None) -> str:
        """Clone ``source`` and extract ``ref``'s tree into ``staging/tree``; returns the commit."""
        ref = validate_ref(ref)
        repo = staging / "repo"
        clone(source, repo, self.git_timeout)
        commit = resolve_ref(repo, ref)
        git_tree(repo, commit, staging / "tree", max_bytes=self.max_bytes, timeout=self.git_timeout)
        shutil.rmtree(repo)
        return commit

    def publish(self, name: str, source: Source, *, publisher: str, restore: bool = False,
                upload: IO[bytes] | None = None) -> dict:
        """Fetch, check and publish; returns the new ``current.json``. Raises CourseError."""
        validate_name(name)
        staging = self._staging()
        try:
            if source.kind == "git":
                commit = self.stage_git(staging, validate_url(source.location), source.ref)
            elif source.kind == "bundle":
                bundle = staging / "upload.bundle"
                with open(bundle, "wb") as f:
                    shutil.copyfileobj(upload, f)
                commit = self.stage_git(staging, str(bundle), source.ref)
            elif source.kind == "directory":
                extract_tar(upload, staging / "tree", max_bytes=self.max_bytes)
                commit = None
            else:
                raise CourseError(f"unknown source kind {source.kind!r}")
            files = check_tree(staging / "tree")
            version = commit[:12] if commit else content_version(files)
            return self._install(name, staging / "tree", version, {
                "course": name,
                "version": version,
                "commit": commit,
                "publication": f"{int(time.time())}-{secrets.token_hex(4)}",
                "publisher": publisher,
                "published": now(),
                "restore": bool(restore),
                "source": {"kind": source.kind, "location": source.location, "ref": source.ref},
                "files": files,
            })
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _install(self, name: str, tree: Path, version: str, current: dict) -> dict:
        course = self.root / name
        versions = course / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        for d in (course, versions):
            os.chmod(d, 0o755)
        final = versions / version
        if not final.exists():  # same version id means the same files: reuse it
            os.rename(tree, final)
        write_json(course / CURRENT, current)
        history = read_json(course / HISTORY, []) or []
        entry = {k: current[k] for k in ("version", "publication", "publisher", "published", "restore")}
        history = ([entry] + history)[:50]
        write_json(course / HISTORY, history)
        for p in (course / CURRENT, course / HISTORY):
            os.chmod(p, 0o644)
        self._prune(versions, history)
        return current

    def _prune(self, versions: Path, history: list[dict]):
        keep = []
        for h in history:
            if h["version"] not in keep:
                keep.append(h["version"])
        keep = set(keep[: self.keep_versions])
        for d in versions.iterdir():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def remove(self, name: str) -> bool:
        """Unpublish: users' copies stay in their homes; later syncs leave them alone."""
        course = self.root / validate_name(name)
        if not (course / CURRENT).exists():
            return False
        trash = self.root / STAGING / f"removed-{secrets.token_hex(8)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(course, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def clean_staging(self):
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
