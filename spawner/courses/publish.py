"""Publishing courses: fetch a source, check it, and publish it atomically into the courses volume.

A course is a name and a source: a git repository (a URL the hub clones, or a bundle the CLI
uploads from a local repository) at a ref, or a directory (uploaded as a tar). Publishing
stages the files under ``<root>/.staging/``, checks them, then renames them into place as
``<root>/<course>/versions/<version>/`` and replaces ``<root>/<course>/current.json``; readers (the
sync program in users' containers) see the old publication or the new one, never a mix. Nothing
here touches a home: bad input fails before anything is published.

The layout and the file format are shared with ``coursesync`` (the program users' containers run).
Git is the real ``git`` binary, with no prompts and a timeout. Fetching (the clone, ``git archive``
and the extraction of an upload) is ``fetch_tree``: the course service runs it in a throwaway
container without the Docker socket, as ``nobody`` (``courses_service.ContainerFetcher``, through
``python -m spawner.courses.publish fetch REQUEST``); ``LocalFetcher`` runs it in-process (tests). The
checked tree then comes back through the same tar checks before anything is published.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import stat
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from spawner.courses import check_run
from spawner.courses import owners as course_owners
from spawner.courses import sync as coursesync
from spawner.courses.records import COURSE_NAME
from spawner.courses.sources import GitPolicy, GitTarget, SourceRefused, check_git_url, scrub, strip_credentials
from spawner.courses.sync import CURRENT, TOOL_NAME, TOOLS_DIR, VERSIONS, now, read_json, sha256_file, write_json

NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"
_NAME = re.compile(COURSE_NAME)
_REF = re.compile(r"^[A-Za-z0-9._/@{}^~-]{1,200}$")
SKIP_DIRS = {".git", ".ipynb_checkpoints", "__pycache__"}
STAGING = ".staging"
HISTORY = "history.json"
OWNERS = "owners.json"


class CourseError(Exception):
    """A request that cannot be done; ``status`` is the HTTP status the service answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(scrub(message))  # never a token from a URL, in a reply or a log line
        self.status = status


def validate_name(name: str) -> str:
    if not name:
        raise CourseError("a course needs a name (" + NAME_RULE + ")")
    if "/" in name or "\\" in name:
        raise CourseError(f"course name {name!r} must not contain '/': {NAME_RULE}")
    if ".." in name:
        raise CourseError(f"course name {name!r} must not contain '..': {NAME_RULE}")
    if not _NAME.fullmatch(name):
        raise CourseError(f"course name {name!r} is not allowed: {NAME_RULE}")
    return name


def validate_ref(ref: str | None) -> str:
    if ref is None or ref == "":
        return "HEAD"
    if ref.startswith("-") or ".." in ref or not _REF.fullmatch(ref):
        raise CourseError(f"git ref {ref!r} is not a branch, tag or commit name")
    return ref


# --- git -----------------------------------------------------------------------------------------


def _git_env(home: Path, protocols: str) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
        "GIT_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=15",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": protocols,  # the checked scheme only: no file://, ext::, submodule tricks
        "LC_ALL": "C",
    }


def _git(args: list[str], *, cwd: Path | None = None, timeout: float = 120, stdout=subprocess.PIPE):
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=_git_env(cwd or Path("/tmp"), "file"), stdout=stdout,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CourseError("git is not installed where the course service runs", 500) from None
    except subprocess.TimeoutExpired:
        raise CourseError(f"git {args[0]} took longer than {timeout:.0f} s; is the repository reachable?", 504) from None


def _git_message(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:", "ERROR"))]
    return (fatal or lines or ["(no message)"])[-1][:300]


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


def clone_args(source: str, dest: Path, *, resolve: list[str] = ()) -> list[str]:
    """``git clone`` of ``source`` without a checkout, pinned to the checked addresses, no redirects."""
    pins = [a for entry in resolve for a in ("-c", f"http.curloptResolve={entry}")]
    return ["git", "-c", "http.followRedirects=false", "-c", "transfer.fsckObjects=true", *pins,
            "clone", "--quiet", "--no-checkout", "--no-recurse-submodules", "--", source, str(dest)]


def clone(source: str, dest: Path, *, timeout: float = 120, max_bytes: int = 2**30, protocols: str = "https",
          resolve: list[str] = ()):
    """Clone ``source`` (URL or bundle file) into ``dest``; stops at ``max_bytes`` on disk or ``timeout``."""
    shown = "(uploaded bundle)" if source.startswith("/") else strip_credentials(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    err = dest.parent / f".{dest.name}.stderr"
    with open(err, "w+b") as errf:
        try:
            proc = subprocess.Popen(clone_args(source, dest, resolve=resolve), env=_git_env(dest.parent, protocols),
                                    stdout=subprocess.DEVNULL, stderr=errf)
        except FileNotFoundError:
            raise CourseError("git is not installed where courses are fetched", 500) from None
        deadline = time.monotonic() + timeout
        try:
            while True:
                done = proc.poll() is not None
                if dest.exists() and tree_size(dest) > max_bytes:
                    raise CourseError(f"the git repository {shown} is larger than the clone limit of "
                                      f"{max_bytes / 2**20:g} MiB (courses.maxCloneMb)", 413)
                if done:
                    break
                if time.monotonic() > deadline:
                    raise CourseError(f"git clone of {shown} took longer than {timeout:.0f} s; is the repository "
                                      "reachable?", 504)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errf.seek(0)
        message = errf.read()
    err.unlink()
    if proc.returncode:
        raise CourseError(f"cannot fetch the git repository {shown}: {_git_message(message)}")


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` names (branch, tag or commit); unknown refs list what there is."""
    for candidate in (ref, f"origin/{ref}", f"refs/tags/{ref}"):
        proc = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], cwd=repo)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
    names = _git(["for-each-ref", "--format=%(refname:short)", "refs/remotes", "refs/tags", "refs/heads"], cwd=repo)
    known = sorted({n.removeprefix("origin/") for n in names.stdout.decode().split() if n not in ("origin/HEAD", "origin")})
    raise CourseError(f"unknown git ref {ref!r}; the repository has: {', '.join(known[:20]) or 'no branches'}")


def git_tree(repo: Path, commit: str, dest: Path, *, max_bytes: int, max_files: int, timeout: float = 120):
    """Extract the tree of ``commit`` into ``dest`` through ``git archive`` and the tar checks."""
    proc = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_git_env(repo, "file"))
    try:
        extract_tar(proc.stdout, dest, max_bytes=max_bytes, max_files=max_files)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise CourseError(f"git archive took longer than {timeout:.0f} s", 504) from None
    if code:
        raise CourseError(f"git archive failed: {err.decode(errors='replace').strip()[:300]}")


# --- trees ---------------------------------------------------------------------------------------


def too_big(max_bytes: int) -> CourseError:
    return CourseError(f"the course is larger than the limit of {max_bytes / 2**20:g} MiB (courses.maxMb)", 413)


def too_many(max_files: int) -> CourseError:
    return CourseError(f"the course has more than the limit of {max_files} files (courses.maxFiles)", 413)


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


def extract_tar(fileobj: IO[bytes], dest: Path, *, max_bytes: int, max_files: int = 5000):
    """Extract an uploaded or archived tree into ``dest``, refusing anything that leaves it.

    Absolute names, ``..``, devices, and links pointing outside the tree are errors (nothing of
    the tree is published then); tarfile's ``data`` filter (PEP 706) checks every member again.
    Counts as it goes: a tree larger than ``max_bytes`` or with more than ``max_files`` entries stops.
    """
    dest.mkdir(parents=True, exist_ok=True)
    total = count = 0
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
                count += 1
                if count > max_files:
                    raise too_many(max_files)
                if total > max_bytes:
                    raise too_big(max_bytes)
                tar.extract(m, dest, filter="data")
    except tarfile.FilterError as e:
        raise CourseError(f"refused: {e}") from None
    except tarfile.TarError as e:
        raise CourseError(f"not a readable tar archive: {e}") from None


def check_tree(root: Path, *, max_bytes: int = 2**30, max_files: int = 5000) -> dict[str, str]:
    """Check a staged tree and return path -> sha256 of every file.

    Symlinks to files inside the tree become copies (a home gets plain files); symlinks that leave
    the tree, dangle or name a directory are refused. Files are made world-readable. The limits
    hold for the result (copies of links included).
    """
    root_real = root.resolve()
    files = {}
    total = 0
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
            total += p.lstat().st_size
            if total > max_bytes:
                raise too_big(max_bytes)
            if len(files) >= max_files:
                raise too_many(max_files)
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


# --- fetching (runs in a throwaway container; see courses_service.ContainerFetcher) -------------


@dataclass(frozen=True)
class Source:
    """Where a publication comes from: ``kind`` is git (URL), bundle (uploaded repo) or directory."""

    kind: str
    location: str  # URL, or a description of the upload
    ref: str | None = None


@dataclass(frozen=True)
class Limits:
    """How much one publication may fetch (``courses.*`` in the config)."""

    max_bytes: int = 256 * 2**20        # the course's files
    max_files: int = 5000               # its files and directories
    max_clone_bytes: int = 2**30        # the git clone, history included
    timeout: float = 120                # each git step


def fetch_request(source: Source, limits: Limits, target: GitTarget | None = None) -> dict:
    """What ``fetch_tree`` is asked to do (JSON: it travels into the fetch container). Pure."""
    if source.kind not in ("git", "bundle", "directory"):
        raise CourseError(f"unknown source kind {source.kind!r}")
    return {
        "kind": source.kind,
        "url": target.url if target else None,  # may hold credentials: never stored or logged
        "protocols": target.scheme if target else "file",
        "resolve": target.curl_resolve if target else [],
        "ref": validate_ref(source.ref) if source.kind != "directory" else None,
        "max_bytes": limits.max_bytes, "max_files": limits.max_files,
        "max_clone_bytes": limits.max_clone_bytes, "timeout": limits.timeout,
    }


def fetch_tree(request: dict, work: Path, upload: Path | None = None) -> dict:
    """Fetch and check a source into ``work/tree``; returns ``{"commit"}`` (None for a directory).

    The untrusted part of publishing (git on a stranger's repository, an uploaded archive): the
    service runs it as ``nobody`` in a throwaway container without the Docker socket.
    """
    tree = work / "tree"
    limits = {k: request[k] for k in ("max_bytes", "max_files")}
    commit = None
    if request["kind"] == "directory":
        with open(upload, "rb") as f:
            extract_tar(f, tree, **limits)
    else:
        repo = work / "repo"
        source = request["url"] if request["kind"] == "git" else str(upload)
        clone(source, repo, timeout=request["timeout"], max_bytes=request["max_clone_bytes"],
              protocols=request["protocols"], resolve=request["resolve"])
        commit = resolve_ref(repo, request["ref"])
        git_tree(repo, commit, tree, timeout=request["timeout"], **limits)
        shutil.rmtree(repo)
    check_tree(tree, **limits)
    return {"commit": commit}


class LocalFetcher:
    """Runs ``fetch_tree`` in this process (unit tests; a deployment uses the container one)."""

    def fetch(self, request: dict, upload: IO[bytes] | None, staging: Path) -> dict:
        path = None
        if upload is not None:
            path = staging / "upload"
            with open(path, "wb") as f:
                shutil.copyfileobj(upload, f)
        try:
            return fetch_tree(request, staging, path)
        finally:
            if path:
                path.unlink(missing_ok=True)


def fetch_main(argv=None) -> int:
    """``python -m spawner.courses.publish fetch REQUEST WORK [UPLOAD]``: one JSON line on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (3, 4) or argv[0] != "fetch":
        print("usage: python -m spawner.courses.publish fetch REQUEST.json WORKDIR [UPLOAD]", file=sys.stderr)
        return 2
    try:
        request = json.loads(Path(argv[1]).read_text())
        result = {"ok": True, **fetch_tree(request, Path(argv[2]), Path(argv[3]) if len(argv) == 4 else None)}
    except CourseError as e:
        result = {"ok": False, "error": str(e), "status": e.status}
    except OSError as e:
        result = {"ok": False, "error": scrub(f"fetching the source failed: {e}"), "status": 500}
    print(json.dumps(result))
    return 0


# --- the store -----------------------------------------------------------------------------------


class CourseStore:
    """The courses volume as the course service sees it (read-write)."""

    def __init__(self, *, root: Path, keep_versions: int = 3, limits: Limits = Limits(),
                 git_policy: GitPolicy = GitPolicy(), fetcher=None):
        self.root = root
        self.keep_versions = keep_versions
        self.limits = limits
        self.git_policy = git_policy
        self.fetcher = fetcher or LocalFetcher()

    # reading

    def current(self, name: str) -> dict | None:
        return read_json(self.root / validate_name(name) / CURRENT)

    def list(self) -> list[dict]:
        out = []
        for name, current in coursesync.published(self.root):
            info = {k: v for k, v in current.items() if k != "files"}
            info["files"] = len(current["files"])
            info["history"] = read_json(self.root / name / HISTORY, [])
            info["owners"] = self.ownership(name).to_json()
            out.append(info)
        return out

    def ownership(self, name: str) -> course_owners.Ownership | None:
        """Who owns ``name`` and with whom it is shared; None: no such course (anyone may create it).
        A damaged record leaves the course to admins (no owner), never to everybody."""
        course = self.root / validate_name(name)
        if not (course / CURRENT).exists():
            return None
        try:
            return course_owners.parse(read_json(course / OWNERS),
                                       fallback_owner=course_owners.first_publisher(read_json(course / HISTORY, [])))
        except course_owners.OwnersError:
            return course_owners.Ownership(None)

    def set_ownership(self, name: str, ownership: course_owners.Ownership) -> None:
        course = self.root / validate_name(name)
        write_json(course / OWNERS, ownership.to_json())
        os.chmod(course / OWNERS, 0o644)

    # writing

    def install_tool(self):
        """Put the programs users' and check containers run where they find them (``<mount>/.tools/``):
        the sync program and the course check (``check_run``), always the hub's own versions."""
        tools = self.root / TOOLS_DIR
        tools.mkdir(parents=True, exist_ok=True)
        os.chmod(tools, 0o755)
        os.chmod(self.root, 0o755)
        for name, program in ((TOOL_NAME, coursesync.__file__), (check_run.TOOL_NAME, check_run.__file__)):
            tmp = tools / f".{name}.tmp"
            shutil.copyfile(program, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, tools / name)

    def _staging(self) -> Path:
        d = self.root / STAGING / secrets.token_hex(8)
        d.mkdir(parents=True)
        return d

    def request(self, source: Source) -> dict:
        """Check the source (URL policy, ref) and say what to fetch; CourseError before any I/O."""
        target = None
        if source.kind == "git":
            try:
                target = check_git_url(source.location, self.git_policy)
            except SourceRefused as e:
                raise CourseError(str(e)) from None
        return fetch_request(source, self.limits, target)

    def publish(self, name: str, source: Source, *, publisher: str, restore: bool = False,
                upload: IO[bytes] | None = None) -> dict:
        """Fetch, check and publish; returns the new ``current.json``. Raises CourseError."""
        validate_name(name)
        request = self.request(source)
        staging = self._staging()
        try:
            commit = self.fetcher.fetch(request, upload, staging)["commit"]
            files = check_tree(staging / "tree", max_bytes=self.limits.max_bytes, max_files=self.limits.max_files)
            version = commit[:12] if commit else content_version(files)
            return self._install(name, staging / "tree", version, {
                "course": name,
                "version": version,
                "commit": commit,
                "publication": f"{int(time.time())}-{secrets.token_hex(4)}",
                "publisher": publisher,
                "published": now(),
                "restore": bool(restore),
                "source": {"kind": source.kind, "location": strip_credentials(scrub(source.location))[:300],
                           "ref": source.ref},
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
        if not (course / CURRENT).exists() and not (course / OWNERS).exists():  # a new course: its publisher owns it
            write_json(course / OWNERS, course_owners.Ownership(current["publisher"]).to_json())
            os.chmod(course / OWNERS, 0o644)
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


if __name__ == "__main__":
    sys.exit(fetch_main())
