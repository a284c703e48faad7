"""The worker that runs inside a throwaway helper container to archive and restore volumes.

Standard library only: ``spawner.deploy.backup`` passes this file's source to ``python3 -c`` in
the hub image, with the volumes and the backup directory mounted, so the host needs no access to
Docker's volume directories and the engine may be remote from the files it keeps.

    dump  SRC OUT.tar ...    tar each SRC; every ``*.sqlite`` through SQLite's online backup API, so a
                             database the running hub writes to is copied consistent, never torn
    load  IN.tar DST ...     empty each DST, then extract (refusing absolute paths, ``..``, writes out of
                             DST and device files; owners and modes kept, as homes need)
    du    DIR...             bytes used under each DIR, one JSON object
    revision DB              the alembic revision of the JupyterHub database DB (null: no database)
                             and the head of the image's own JupyterHub (null: none installed)

Each command prints one JSON line per finished item on stdout (the host shows it as progress).
"""

import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile

SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")


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


def dump(src: str, out: str):
    files = size = 0
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(out + ".part", "w") as tar:
        for root, dirs, names in os.walk(src):
            dirs.sort()
            rel_root = os.path.relpath(root, src)
            tar.add(root, arcname=rel_root, recursive=False)  # "." too: a home's root is the user's
            for name in sorted(names):
                path = os.path.join(root, name)
                arcname = os.path.normpath(os.path.join(rel_root, name))
                if name.endswith(SQLITE_SIDE_FILES) and os.path.exists(path.rsplit("-", 1)[0]):
                    continue  # the online backup below already holds what they hold
                if name.endswith(".sqlite") and os.path.isfile(path) and not os.path.islink(path):
                    info = tar.gettarinfo(path, arcname)
                    copy = _sqlite_copy(path, tmp)
                    info.size = os.path.getsize(copy)
                    with open(copy, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.add(path, arcname=arcname, recursive=False)
                files += 1
                size += os.lstat(path).st_size
    os.replace(out + ".part", out)
    _say(done="dump", src=src, files=files, bytes=size)


def _safe(member, dest):
    """tarfile's ``tar`` filter (no absolute member paths, nothing written outside ``dest``, not
    even through a link extracted before), no device files, and the owner and mode as archived
    minus setuid/setgid: a home belongs to the user's uid, and ``~/.ssh`` stays 0700. Links may point
    anywhere (``~/data -> /data`` is a user's right); they are followed only in the user's container."""
    if member.isdev():
        raise tarfile.SpecialFileError(member)
    checked = tarfile.tar_filter(member, dest)
    if checked is None or member.issym() or member.islnk():
        return checked
    return checked.replace(mode=member.mode & 0o1777, deep=False)


def load(archive: str, dst: str):
    for name in os.listdir(dst):
        path = os.path.join(dst, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    with tarfile.open(archive, "r:") as tar:
        members = tar.getmembers()
        tar.extractall(dst, members=members, numeric_owner=True, filter=_safe)
    _say(done="load", dst=dst, files=len(members))


def du(*dirs: str):
    out = {}
    for d in dirs:
        total = 0
        for root, _, names in os.walk(d):
            for name in names:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
        out[d] = total
    _say(done="du", bytes=out)


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
    if command == "du":
        return du(*args)
    if command == "revision":
        return revision(*args)
    for a, b in zip(args[::2], args[1::2]):
        {"dump": dump, "load": load}[command](a, b)


if __name__ == "__main__":
    main(sys.argv[1:])
