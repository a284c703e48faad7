"""Publishing into a course store: names, git (the real binary, local repositories), tars, symlinks."""

import io
import json
import os
import subprocess
import tarfile

import pytest

from spawner.courses import sync as cs
from spawner.courses.sources import GitPolicy
from spawner.courses.publish import CourseError, CourseStore, Limits, Source, validate_name


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", "../x", ".hidden", "-x", "a b", "x" * 65])
def test_bad_course_names(name):
    with pytest.raises(CourseError) as e:
        validate_name(name)
    assert e.value.status == 400
    if "/" in name:
        assert "'/'" in str(e.value)
    elif ".." in name:
        assert "'..'" in str(e.value)


@pytest.mark.parametrize("name", ["intro", "DP1-tutorial", "week_1.v2", "a"])
def test_good_course_names(name):
    assert validate_name(name) == name


def git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "I", "GIT_AUTHOR_EMAIL": "i@x", "GIT_COMMITTER_NAME": "I",
           "GIT_COMMITTER_EMAIL": "i@x", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "A.ipynb").write_text("A1")
    (r / "sub").mkdir()
    (r / "sub/B.ipynb").write_text("B1")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "v1")
    git(r, "tag", "v1")
    return r


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "courses"
    root.mkdir()
    return CourseStore(root=root, keep_versions=2)


def bundle(repo, tmp_path):
    path = tmp_path / "up.bundle"
    git(repo, "bundle", "create", "-q", str(path), "HEAD", "--branches", "--tags")
    return open(path, "rb")


def test_publish_bundle_at_ref_then_sync(store, repo, tmp_path):
    v1 = git(repo, "rev-parse", "HEAD")
    (repo / "A.ipynb").write_text("A2")
    git(repo, "commit", "-qam", "v2")
    cur = store.publish("intro", Source("bundle", "local repo", "v1"), publisher="inst",
                        upload=bundle(repo, tmp_path))
    assert cur["version"] == v1[:12] and cur["commit"] == v1 and set(cur["files"]) == {"A.ipynb", "sub/B.ipynb"}
    assert (store.root / "intro/versions" / v1[:12] / "A.ipynb").read_text() == "A1"
    assert not list((store.root / ".staging").iterdir())
    home = tmp_path / "home"
    cs.sync_all(store.root, home, log=lambda m: None)
    assert (home / "notebooks/intro/sub/B.ipynb").read_text() == "B1"

    cur2 = store.publish("intro", Source("bundle", "local repo", "main"), publisher="inst",
                         upload=bundle(repo, tmp_path))
    assert cur2["version"] != v1[:12] and store.current("intro")["version"] == cur2["version"]
    [info] = store.list()
    assert info["course"] == "intro" and info["files"] == 2 and len(info["history"]) == 2


def test_unknown_ref_names_what_exists_and_writes_nothing(store, repo, tmp_path):
    with pytest.raises(CourseError) as e:
        store.publish("intro", Source("bundle", "x", "nope"), publisher="i", upload=bundle(repo, tmp_path))
    assert e.value.status == 400 and "unknown git ref 'nope'" in str(e.value) and "main" in str(e.value)
    assert store.list() == [] and not (store.root / "intro").exists()


def test_unreachable_url_is_a_clear_error(tmp_path):
    store = CourseStore(root=tmp_path, git_policy=GitPolicy(allowed_hosts=("127.0.0.0/8",)))
    with pytest.raises(CourseError) as e:
        store.publish("intro", Source("git", "https://oauth2:s3cret@127.0.0.1:9/nothing.git", None), publisher="i")
    assert e.value.status == 400 and "cannot fetch the git repository https://127.0.0.1:9/nothing.git" in str(e.value)
    assert "s3cret" not in str(e.value) and not (store.root / "intro").exists()


@pytest.mark.parametrize("url,needle", [
    ("file:///srv/stackhub/secrets", "must be an https:// URL"),
    ("/etc", "must be an https:// URL"),
    ("--upload-pack=touch /tmp/x", "needs a URL"),
    ("ext::sh", "must be an https:// URL"),
    ("http://example.org/x.git", "scheme http is not allowed (allowed: https://)"),
    ("git@github.com:org/x.git", "scheme ssh is not allowed"),
    ("https://127.0.0.1/x.git", "127.0.0.1 is a loopback address"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("https://10.1.2.3/x.git", "10.1.2.3 is a private address"),
])
def test_refused_git_urls_name_the_rule_and_fetch_nothing(store, url, needle):
    with pytest.raises(CourseError) as e:
        store.publish("intro", Source("git", url, None), publisher="i")
    assert e.value.status == 400 and needle in str(e.value)
    assert not (store.root / "intro").exists() and not list((store.root / ".staging").glob("*"))


def test_symlink_outside_repo_is_refused(store, repo, tmp_path):
    os.symlink("/etc/passwd", repo / "passwd")
    os.symlink("../../outside", repo / "sub/up")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "links")
    with pytest.raises(CourseError, match="outside the course: refused"):
        store.publish("intro", Source("bundle", "x", "main"), publisher="i", upload=bundle(repo, tmp_path))
    assert not (store.root / "intro").exists()


def test_symlink_to_a_file_inside_becomes_a_copy(store, repo, tmp_path):
    os.symlink("sub/B.ipynb", repo / "B-link.ipynb")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "inner link")
    cur = store.publish("intro", Source("bundle", "x", "main"), publisher="i", upload=bundle(repo, tmp_path))
    p = store.root / "intro/versions" / cur["version"] / "B-link.ipynb"
    assert not p.is_symlink() and p.read_text() == "B1"


def tar_of(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_directory_upload_version_is_a_content_hash(store):
    up = tar_of([("A.ipynb", "file", b"A1"), (".git/config", "file", b"x"), ("x/.ipynb_checkpoints/A.ipynb", "file", b"")])
    cur = store.publish("d", Source("directory", "dir"), publisher="i", upload=up)
    assert cur["version"].startswith("c") and set(cur["files"]) == {"A.ipynb"}
    again = store.publish("d", Source("directory", "dir"), publisher="i", restore=True,
                          upload=tar_of([("A.ipynb", "file", b"A1")]))
    assert again["version"] == cur["version"] and again["publication"] != cur["publication"] and again["restore"]


@pytest.mark.parametrize("entries,message", [
    ([("../evil", "file", b"x")], "inside the course"),
    ([("/abs", "file", b"x")], "inside the course"),
    ([("l", "sym", "/etc/passwd")], "outside the course"),
    ([("a/l", "sym", "../../x")], "outside the course"),
    ([], "no files"),
])
def test_bad_directory_uploads(store, entries, message):
    with pytest.raises(CourseError, match=message):
        store.publish("d", Source("directory", "dir"), publisher="i", upload=tar_of(entries))
    assert not (store.root / "d").exists()


def test_size_limit(tmp_path):
    store = CourseStore(root=tmp_path, limits=Limits(max_bytes=10))
    with pytest.raises(CourseError) as e:
        store.publish("d", Source("directory", "dir"), publisher="i", upload=tar_of([("a", "file", b"x" * 11)]))
    assert e.value.status == 413


def test_old_versions_pruned_and_remove(store):
    for i in range(4):
        store.publish("d", Source("directory", "dir"), publisher="i", upload=tar_of([("a", "file", str(i).encode())]))
    assert len(list((store.root / "d/versions").iterdir())) == 2
    assert store.remove("d") and not (store.root / "d").exists() and store.remove("d") is False


def test_install_tool(store):
    store.install_tool()
    tool = store.root / cs.TOOLS_DIR / cs.TOOL_NAME
    assert os.access(tool, os.X_OK) and tool.read_text().startswith("#!/usr/bin/env python3")


# --- the CLI's side of an upload, and the service's count of versions ----------------------------


def test_cli_directory_upload_round_trip_keeps_outside_symlinks_for_the_hub_to_refuse(store, tmp_path):
    from spawner.cli.courses import classify, directory_tar

    d = tmp_path / "dir"
    (d / ".ipynb_checkpoints").mkdir(parents=True)
    (d / "A.ipynb").write_text("A1")
    (d / ".ipynb_checkpoints/A-checkpoint.ipynb").write_text("x")
    assert classify(str(d)) == ("directory", str(d.resolve()))
    cur = store.publish("d", Source("directory", str(d)), publisher="i", upload=io.BytesIO(directory_tar(str(d))))
    assert set(cur["files"]) == {"A.ipynb"}
    os.symlink("/etc", d / "etc")
    with pytest.raises(CourseError, match="outside the course"):
        store.publish("d", Source("directory", str(d)), publisher="i", upload=io.BytesIO(directory_tar(str(d))))


def test_cli_classifies_sources(repo, tmp_path):
    from spawner.cli.courses import classify
    from spawner.cli.sessions import ApiError

    assert classify("https://github.com/org/tut.git") == ("git", "https://github.com/org/tut.git")
    assert classify("git@github.com:org/tut.git")[0] == "git"
    assert classify(str(repo)) == ("bundle", str(repo.resolve()))
    with pytest.raises(ApiError, match="not a git URL and not a directory"):
        classify(str(tmp_path / "missing"))


def test_seen_counts_users_per_version(tmp_path):
    from spawner.services.courses import Seen

    seen = Seen(tmp_path / "seen.json")
    seen.update("ann", {"intro": {"version": "v2", "synced": "t"}})
    seen.update("bob", {"intro": {"version": "v1"}, "other": {"version": "x"}})
    seen.update("cy", {"intro": {"version": "v2"}})
    seen.save()
    assert Seen(tmp_path / "seen.json").counts("intro") == {"v2": 2, "v1": 1}


# --- limits, and the fetch program the throwaway container runs ----------------------------------


def test_file_count_limit(tmp_path):
    store = CourseStore(root=tmp_path, limits=Limits(max_files=3))
    with pytest.raises(CourseError) as e:
        store.publish("d", Source("directory", "dir"), publisher="i",
                      upload=tar_of([(f"n{i}", "file", b"x") for i in range(4)]))
    assert e.value.status == 413 and "limit of 3 files (courses.maxFiles)" in str(e.value)
    assert not (tmp_path / "d").exists()


def test_links_copied_inside_count_against_the_size_limit(tmp_path):
    store = CourseStore(root=tmp_path, limits=Limits(max_bytes=2**20))
    entries = [("big", "file", b"x" * 600_000)] + [(f"l{i}", "sym", "big") for i in range(3)]
    with pytest.raises(CourseError) as e:
        store.publish("d", Source("directory", "dir"), publisher="i", upload=tar_of(entries))
    assert e.value.status == 413 and "(courses.maxMb)" in str(e.value)


def test_clone_size_limit_stops_the_clone(tmp_path, repo):
    (repo / "big.bin").write_bytes(os.urandom(300_000))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "big")
    store = CourseStore(root=tmp_path / "c", limits=Limits(max_clone_bytes=100_000))
    (tmp_path / "c").mkdir()
    with pytest.raises(CourseError) as e:
        store.publish("d", Source("bundle", "x", "main"), publisher="i", upload=bundle(repo, tmp_path))
    assert e.value.status == 413 and "clone limit" in str(e.value)


@pytest.mark.parametrize("entries,needle", [
    ([("dev", "char", b"")], "refused"),
    ([("../../etc/x", "file", b"")], "inside the course"),
])
def test_tar_devices_and_escapes_are_refused(store, entries, needle):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "char":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 5
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    with pytest.raises(CourseError, match=needle):
        store.publish("d", Source("directory", "dir"), publisher="i", upload=buf)


def test_fetch_program_answers_one_json_line(tmp_path, capsys):
    from spawner.courses.publish import Limits, fetch_main, fetch_request

    up = tmp_path / "up.tar"
    up.write_bytes(tar_of([("A.ipynb", "file", b"A1")]).getvalue())
    req = tmp_path / "req.json"
    req.write_text(json.dumps(fetch_request(Source("directory", "x"), Limits())))
    assert fetch_main(["fetch", str(req), str(tmp_path / "work"), str(up)]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "commit": None}
    assert (tmp_path / "work/tree/A.ipynb").read_text() == "A1"
    req.write_text(json.dumps(fetch_request(Source("directory", "x"), Limits(max_files=0))))
    assert fetch_main(["fetch", str(req), str(tmp_path / "work2"), str(up)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["status"] == 413


def test_a_git_url_with_credentials_is_cloned_with_them_but_stored_without(tmp_path):
    class Fetcher:
        def fetch(self, request, upload, staging):
            self.request = request
            (staging / "tree").mkdir()
            (staging / "tree/A.ipynb").write_text("A1")
            return {"commit": "0123456789abcdef"}

    fetcher = Fetcher()
    store = CourseStore(root=tmp_path, fetcher=fetcher, git_policy=GitPolicy(allowed_hosts=("gitlab.example.org",)))
    cur = store.publish("g", Source("git", "https://oauth2:glpatSECRET@gitlab.example.org/x.git", "main"), publisher="i")
    assert fetcher.request["url"] == "https://oauth2:glpatSECRET@gitlab.example.org/x.git"
    assert cur["source"]["location"] == "https://gitlab.example.org/x.git"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]
