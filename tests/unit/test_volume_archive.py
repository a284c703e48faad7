"""The backup's in-container worker (spawner.deploy.volume_archive) on local folders: nothing a home
holds breaks a backup or a restore, and a restore checks everything before it empties anything."""

import io
import json
import os
import socket
import sqlite3
import tarfile

import pytest

from spawner.deploy import volume_archive as va


def events(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    (h / "work").mkdir(parents=True)
    (h / "work" / "kept.txt").write_text("my results")
    os.mkfifo(h / "pipe")  # a reader of a FIFO waits for a writer for ever
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(h / "sock"))
    s.close()
    (h / "notes.sqlite").write_bytes(b"not a database at all")  # was copied as one and broke the backup
    (h / "data").symlink_to("/data")
    (h / "escape").symlink_to("/etc")  # a link to a folder: kept as the link, never followed
    return h


def test_a_home_with_a_fifo_a_socket_and_a_junk_sqlite_is_archived_and_the_specials_listed(home, tmp_path, capsys):
    out = tmp_path / "home.tar"
    va.dump(str(home), str(out))
    done, = events(capsys)
    assert done["done"] == "dump" and done["skipped_count"] == 2
    assert sorted((s["path"], s["kind"]) for s in done["skipped"]) == [("pipe", "fifo"), ("sock", "socket")]
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert tar.extractfile("notes.sqlite").read() == b"not a database at all"
        assert tar.getmember("escape").issym() and tar.getmember("escape").linkname == "/etc"
        assert tar.getmember("data").issym()
    assert {".", "work", "work/kept.txt", "notes.sqlite"} <= names and not names & {"pipe", "sock"}
    assert not any(n.startswith("escape/") for n in names)


def test_only_the_named_database_goes_through_sqlite(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir()
    con = sqlite3.connect(state / "jupyterhub.sqlite")
    con.execute("create table users (name text)")
    con.execute("insert into users values ('ada')")
    con.commit()
    (state / "other.sqlite").write_bytes(b"junk")
    out = tmp_path / "state.tar"
    va.dump(str(state), str(out), "jupyterhub.sqlite")
    con.close()
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert sqlite3.connect(tmp_path / "x" / "jupyterhub.sqlite").execute("select name from users").fetchall() == [("ada",)]
    assert (tmp_path / "x" / "other.sqlite").read_bytes() == b"junk"


def test_a_file_swapped_for_a_link_while_read_is_not_followed(tmp_path, capsys):
    h = tmp_path / "home"
    h.mkdir()
    (h / "f").write_text("mine")
    secret = tmp_path / "secret"
    secret.write_text("another volume's")
    with tarfile.open(tmp_path / "o.tar", "w") as tar:
        d = va.Dumper(str(h), tar)
        st = os.lstat(h / "f")
        (h / "f").unlink()
        (h / "f").symlink_to(secret)  # the race: listed as a file, opened as a link
        d.add_file(str(h / "f"), "f", st)
    assert d.skipped == [{"path": "f", "kind": "unreadable: Too many levels of symbolic links"}]
    with tarfile.open(tmp_path / "o.tar") as tar:
        assert tar.getnames() == []


def tar_of(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name, data=b"", kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, len(data) if kind == tarfile.REGTYPE else 0, 0o644
    return info, data if kind == tarfile.REGTYPE else None


def test_load_checks_the_whole_archive_before_it_empties_anything(tmp_path, capsys):
    dst = tmp_path / "home"
    dst.mkdir()
    (dst / "precious.txt").write_text("still here")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(tar_of([member("a.txt", b"a"), member("../outside.txt", b"x")]))
    with pytest.raises(tarfile.TarError, match="outside"):
        va.load(str(bad), str(dst))
    assert (dst / "precious.txt").read_text() == "still here" and not (tmp_path / "outside.txt").exists()
    with pytest.raises(tarfile.TarError):
        va.check(str(bad))


def test_an_old_backup_with_a_fifo_or_device_restores_without_them(tmp_path, capsys):
    dst = tmp_path / "home"
    dst.mkdir()
    (dst / "old.txt").write_text("replaced")
    fifo, = [member("pipe", kind=tarfile.FIFOTYPE)]
    dev = member("null", kind=tarfile.CHRTYPE)
    archive = tmp_path / "old.tar"
    archive.write_bytes(tar_of([member("kept.txt", b"back"), fifo, dev]))
    va.load(str(archive), str(dst))
    done = events(capsys)[-1]
    assert done["skipped"] == ["pipe", "null"] and done["files"] == 1
    assert sorted(os.listdir(dst)) == ["kept.txt"] and (dst / "kept.txt").read_text() == "back"


def test_main_reports_an_error_as_json_and_exits_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        va.main(["check", str(tmp_path / "missing.tar")])
    assert e.value.code == 1
    assert "check:" in events(capsys)[-1]["error"]


def test_an_unreadable_folder_is_listed_and_an_unreadable_volume_fails(tmp_path):
    d = va.Dumper(str(tmp_path / "v"), None)
    d.unlisted(PermissionError(13, "Permission denied", str(tmp_path / "v" / "private")))
    assert d.skipped == [{"path": "private", "kind": "unreadable: Permission denied"}]
    with pytest.raises(PermissionError):  # an empty archive must not pass for the volume's backup
        d.unlisted(PermissionError(13, "Permission denied", str(tmp_path / "v")))


def test_a_home_with_links_out_restores_over_itself_and_a_path_through_a_link_is_refused(home, tmp_path, capsys):
    archive = tmp_path / "home.tar"
    va.dump(str(home), str(archive))
    dst = tmp_path / "restored"
    dst.mkdir()
    (dst / "escape").symlink_to("/etc")  # what the home holds now: the checks must not follow it
    va.load(str(archive), str(dst))
    assert os.readlink(dst / "escape") == "/etc" and (dst / "work" / "kept.txt").read_text() == "my results"
    link = tarfile.TarInfo("d")
    link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
    bad = tmp_path / "through.tar"
    bad.write_bytes(tar_of([(link, None), member("d/planted.txt", b"x")]))
    (dst / "kept").write_text("still here")
    with pytest.raises(tarfile.TarError, match="goes through the link 'd'"):
        va.load(str(bad), str(dst))
    assert (dst / "kept").read_text() == "still here"
