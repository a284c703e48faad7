"""The worker that runs inside a throwaway helper container to archive and restore volumes.

Standard library only: ``spawner.deploy.backup`` passes this file's source to ``python3 -c`` in
the hub image, with one volume and one output (or input) directory mounted, so the host needs no
access to Docker's volume directories and the engine may be remote from the files it keeps.

    dump  SRC OUT.tar [DB]   tar SRC. Only DB (a path inside SRC: the hub's own database) goes
                             through SQLite's online backup API, so the database the running hub
                             writes to is copied consistent; any other ``*.sqlite`` is a plain file.
                             FIFOs, sockets and devices are not archived: they are listed as skipped.
                             A file swapped for a link while it is read is not followed (O_NOFOLLOW,
                             and its inode must be the one listed).
    check IN.tar [DIR]       every member of IN.tar through the restore's checks (none is written),
                             and the bytes used under DIR (the volume it would replace), if given
    load  IN.tar DST         check IN.tar whole, then (only if all of it passes) empty DST and
                             extract (refusing absolute paths, ``..``, writes out of DST; special
                             files skipped; owners and modes kept, as homes need)
    du    DIR...             bytes used under each DIR, one JSON object
    revision DB              the alembic revision of the JupyterHub database DB (null: no database)
                             and the head of the image's own JupyterHub (null: none installed)

Each command prints one JSON line per finished item on stdout (the host shows it as progress).
"""

import json
import os
import shutil
import sqlite3
import stat
import sys
import tarfile
import tempfile

SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")
SKIPPED_LISTED = 1000  # skipped files named in the manifest at most (the count is always whole)
SPECIAL = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char-device"),
           (stat.S_ISBLK, "block-device"))


def _say(**kw):
    print(json.dumps(kw), flush=True)


def _sqlite_copy(path: str, tmp: str) -> str:
    """A consistent copy of a live SQLite database (the online backup API takes the locks)."""
    out = os.path.join(tmp, os.path.basename(path))
    src = sqlite3.connect(path, timeout=30)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return out


def special_kind(mode: int):
    """'fifo', 'socket', 'char-device' or 'block-device' for a special file's mode; None otherwise."""
    return next((kind for test, kind in SPECIAL if test(mode)), None)


class Dumper:
    """One volume into one tar, never following a link and never blocking on a special file."""

    def __init__(self, src: str, tar, db=None):
        self.src, self.tar, self.db = src, tar, db
        self.files = self.bytes = 0
        self.skipped, self.skipped_count = [], 0

    def skip(self, arcname: str, why: str):
        self.skipped_count += 1
        if len(self.skipped) < SKIPPED_LISTED:
            self.skipped.append({"path": arcname, "kind": why})

    def add(self, path: str, arcname: str, tmp: str):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # gone since it was listed
        except OSError as e:
            return self.skip(arcname, f"unreadable: {e.strerror}")
        kind = special_kind(st.st_mode)
        if kind:
            return self.skip(arcname, kind)
        if self.db is not None and arcname == self.db and stat.S_ISREG(st.st_mode):
            info = self.tar.gettarinfo(path, arcname)
            copy = _sqlite_copy(path, tmp)
            info.size = os.path.getsize(copy)
            with open(copy, "rb") as f:
                self.tar.addfile(info, f)
        elif stat.S_ISREG(st.st_mode):
            self.add_file(path, arcname, st)
        else:  # a directory's own entry, or a link (as a link: never followed)
            self.tar.add(path, arcname=arcname, recursive=False)
        self.files += 1
        self.bytes += st.st_size

    def add_file(self, path: str, arcname: str, st):
        """A regular file, read through a descriptor opened without following a link, and only if it
        is still the file listed: one swapped for a link, a FIFO or another file meanwhile is skipped."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            return self.skip(arcname, f"unreadable: {e.strerror}")
        with os.fdopen(fd, "rb") as f:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return self.skip(arcname, "changed while read")
            info = self.tar.gettarinfo(arcname=arcname, fileobj=f)
            self.tar.addfile(info, f)

    def unlisted(self, error: OSError):
        """A folder that cannot be listed: the volume's own root fails the volume (an empty archive
        would pass for a backup); one below it is skipped and listed."""
        if os.path.normpath(error.filename or "") == os.path.normpath(self.src):
            raise error
        self.skip(os.path.relpath(error.filename, self.src), f"unreadable: {error.strerror}")

    def run(self):
        with tempfile.TemporaryDirectory() as tmp:
            # never into a link (followlinks=False)
            for root, dirs, names in os.walk(self.src, onerror=self.unlisted):
                dirs.sort()
                rel_root = os.path.relpath(root, self.src)
                if os.path.islink(root):
                    continue  # a directory swapped for a link after it was listed: not followed
                self.tar.add(root, arcname=rel_root, recursive=False)  # "." too: a home's root is the user's
                links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
                dirs[:] = [d for d in dirs if d not in links]  # a link to a folder is kept as the link
                for name in sorted(names + links):
                    path = os.path.join(root, name)
                    arcname = os.path.normpath(os.path.join(rel_root, name))
                    if self.db is not None and arcname.startswith(self.db) and name.endswith(SQLITE_SIDE_FILES):
                        continue  # the online backup already holds what they hold
                    self.add(path, arcname, tmp)


def dump(src: str, out: str, db=None):
    with tarfile.open(out + ".part", "w") as tar:
        dumper = Dumper(src, tar, os.path.normpath(db) if db else None)
        dumper.run()
    os.replace(out + ".part", out)
    _say(done="dump", src=src, files=dumper.files, bytes=dumper.bytes, skipped=dumper.skipped,
         skipped_count=dumper.skipped_count)


def _safe(member, dest):
    """tarfile's ``tar`` filter (no absolute member paths, nothing written outside ``dest``, not
    even through a link extracted before), no special files (skipped: None), and the owner and mode
    as archived minus setuid/setgid: a home belongs to the user's uid, and ``~/.ssh`` stays 0700.
    Links may point anywhere (``~/data -> /data`` is a user's right); they are followed only in the
    user's container."""
    if member.isdev():  # FIFOs and devices: an older backup may hold them; never recreated
        return None
    checked = tarfile.tar_filter(member, dest)
    if checked is None or member.issym() or member.islnk():
        return checked
    return checked.replace(mode=member.mode & 0o1777, deep=False)


def check_members(archive: str):
    """Every member through ``_safe`` as if into an empty folder (what ``load`` extracts into), the
    archive read whole and nothing written; the members and the special ones skipped. A member whose
    path goes through a link an earlier member makes is refused too (the extraction would refuse it
    only when it got there). Raises tarfile.TarError on the first one refused."""
    members, skipped, links = [], [], set()
    with tempfile.TemporaryDirectory() as empty, tarfile.open(archive, "r:") as tar:
        for member in tar:
            name = os.path.normpath(member.name.lstrip("/"))
            parts = name.split("/")
            through = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links), None)
            try:
                if through is not None:
                    raise tarfile.FilterError(f"it goes through the link {through!r}")
                if _safe(member, empty) is None:
                    skipped.append(member.name)
            except tarfile.FilterError as e:
                raise tarfile.TarError(f"{os.path.basename(archive)}: {member.name!r} refused: {e}") from None
            if member.issym() or member.islnk():
                links.add(name)
            members.append(member)
    return members, skipped


def check(archive: str, dst=None):
    members, skipped = check_members(archive)
    _say(done="check", archive=archive, files=len(members), skipped=skipped[:SKIPPED_LISTED],
         bytes=used(dst) if dst else None)


def load(archive: str, dst: str):
    members, skipped = check_members(archive)  # all of it first: nothing is emptied for a bad one
    for name in os.listdir(dst):
        path = os.path.join(dst, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    with tarfile.open(archive, "r:") as tar:
        tar.extractall(dst, numeric_owner=True, filter=_safe)
    _say(done="load", dst=dst, files=len(members) - len(skipped), skipped=skipped[:SKIPPED_LISTED])


def used(d: str) -> int:
    total = 0
    for root, _, names in os.walk(d):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def du(*dirs: str):
    _say(done="du", bytes={d: used(d) for d in dirs})


def revision(db: str):
    """Where a hub database stands and where this image's JupyterHub would migrate it (``up`` takes
    a backup first when they differ)."""
    current = None
    if os.path.isfile(db):
        con = sqlite3.connect(db, timeout=30)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            current = row[0] if row else None
        except sqlite3.Error:  # a database JupyterHub never stamped: not ours to judge
            current = None
        finally:
            con.close()
    head = None
    try:
        import jupyterhub
        from alembic.script import ScriptDirectory

        head = ScriptDirectory(os.path.join(os.path.dirname(jupyterhub.__file__), "alembic")).get_current_head()
    except ImportError:
        pass
    _say(done="revision", exists=os.path.isfile(db), revision=current, head=head)


def main(argv):
    os.umask(0o077)  # archives hold secrets (the hub's cookie secret, password hashes)
    command, *args = argv
    commands = {"du": du, "revision": revision, "dump": dump, "check": check, "load": load}
    if command not in commands:
        raise SystemExit(f"unknown command {command!r}: {', '.join(commands)}")
    try:
        commands[command](*args)
    except (OSError, tarfile.TarError, sqlite3.Error) as e:
        _say(error=f"{command}: {e}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
