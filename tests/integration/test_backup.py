"""`stackhub backup` / `stackhub restore` against the real engine, and the user lifecycle.

The restore test wipes the session's own test deployment (down, every volume of it removed,
secrets and CA deleted), restores it from a backup taken while the hub ran, and starts it again:
users, groups, session locks, courses, tutorial passwords and home files must all be back, and
the rest of the session then runs on the restored deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
import requests

from .hubfixture import OWN, TEST_PREFIX, container_name, home_volume_name

REPO = Path(__file__).resolve().parents[2]
SESSIONS = "services/stackhub-sessions/api/"
COURSES = "services/stackhub-courses/api/"


def cli(hub, *args, timeout=600):
    env = {**os.environ, "STACKHUB_STATE": str(hub.deployment.paths.root), "STACKHUB_CONFIG": str(hub.config_file)}
    return subprocess.run([sys.executable, "-m", "spawner.cli.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def service(hub, base, method, path, **kw):
    """A call to a hub service; right after `up` the hub answers before it routes its services
    (its own 404 page, not JSON), so that is waited out."""
    deadline = time.monotonic() + 60
    while True:
        r = requests.request(method, f"{hub.url}{base}{path}", verify=hub.ca, timeout=60,
                             headers={"Authorization": f"token {hub.token}"}, **kw)
        routed = r.headers.get("Content-Type", "").startswith("application/json")
        if routed or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def sh(hub, name, cmd):
    code, out = hub.client.containers.get(container_name(name)).exec_run(["bash", "-c", cmd], user="1000")
    return code, out.decode()


def deployment_volumes(client) -> list[str]:
    return sorted(v.name for v in client.volumes.list(filters={"label": f"stackhub.deployment={TEST_PREFIX}"}))


def anonymous_mounts(client) -> dict[str, list[str]]:
    """Containers of the test deployment (and its throwaways) that carry an anonymous volume."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"stackhub.deployment={TEST_PREFIX}"}):
        anon = [m["Name"] for m in c.attrs.get("Mounts", []) if m.get("Type") == "volume"
                and len(m.get("Name", "")) == 64 and all(ch in "0123456789abcdef" for ch in m["Name"])]
        if anon:
            out[c.name] = anon
    return out


def publish_course(hub, tmp_path, name):
    repo = tmp_path / name
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "I", "GIT_AUTHOR_EMAIL": "i@example.org",
           "GIT_COMMITTER_NAME": "I", "GIT_COMMITTER_EMAIL": "i@example.org"}
    (repo / "intro.md").write_text("# intro\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "v1"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    out = cli(hub, "course", "publish", name, str(repo), "--ref", "main")
    assert out.returncode == 0, out.stderr


# What a home may hold to break a backup: a FIFO (a reader waits for a writer for ever), a socket, a
# file named *.sqlite that is no database, a link out of the home, and a folder swapped for a link to
# / over and over while the backup runs (the race). Each is made by the user in their own server.
PLANT = ("mkfifo ~/pipe && python3 -c \"import os, socket; socket.socket(socket.AF_UNIX).bind(os.path.expanduser('~/sock'))\" "
         "&& echo 'not a database' > ~/notes.sqlite && ln -s /etc ~/escape && mkdir -p ~/race && echo r > ~/race/f")
RACE = ("nohup sh -c 'while :; do mv ~/race ~/race.x && ln -s / ~/race && rm ~/race && mv ~/race.x ~/race; done' "
        ">/dev/null 2>&1 &")


def plant_device(client, volume: str, path: str):
    """A character device (1,3: /dev/null) in a home. A user's server has no CAP_MKNOD, so a root helper
    with Docker's default capabilities makes it, as an attacker with a device file would have it."""
    image = next(iter(client.images.list(name="stackhub/lsst-stack")))
    client.containers.run(image.id, ["mknod", f"/v/{path}", "c", "1", "3"], entrypoint=[], user="0",
                          volumes={volume: {"bind": "/v", "mode": "rw"}}, network_disabled=True, remove=True)


def test_restore_onto_a_wiped_deployment_brings_everything_back(hub, user, tmp_path, stack_tags):
    client = hub.client
    alice, bob = user("bk"), user("bk")
    hub.spawn(alice)
    assert sh(hub, alice, "mkdir -p ~/work && echo 'my results' > ~/work/kept.txt && chmod 700 ~/work")[0] == 0
    code, text = sh(hub, alice, PLANT)
    assert code == 0, text
    plant_device(client, home_volume_name(alice), f"{alice}/null-device")
    assert sh(hub, alice, RACE)[0] == 0
    password = hub.user_password(alice)
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert hub.api("POST", f"/groups/{group}", json={"users": [alice, bob]}).status_code == 201
    session = f"backup {uuid.uuid4().hex[:4]}"
    q = requests.utils.quote(session, safe="")
    r = service(hub, SESSIONS, "PUT", f"sessions/{q}", json={"tag": stack_tags[1], "group": group})
    assert r.status_code == 200, r.text
    course = f"bk-{uuid.uuid4().hex[:4]}"
    publish_course(hub, tmp_path, course)

    # --dry-run lists, with sizes, and writes nothing
    dest = tmp_path / "backup"
    out = cli(hub, "backup", str(dest), "--homes", "--data", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "volumes/hub-state.tar" in out.stdout and home_volume_name(alice) in out.stdout
    assert "secrets/admin-token" in out.stdout and "tls/ca.pem" in out.stdout
    assert not dest.exists()

    # a backup while the hub runs (alice's server too)
    out = cli(hub, "backup", str(dest), "--homes", "--data")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    assert {v["role"] for v in manifest["volumes"]} == {"hub-state", "courses", "home", "data"}
    assert manifest["failed"] == []
    home = next(v for v in manifest["volumes"] if v.get("user") == alice)
    skipped = {s["path"]: s["kind"] for s in home["skipped"]}
    assert skipped.get(f"{alice}/pipe") == "fifo" and skipped.get(f"{alice}/sock") == "socket", skipped
    assert skipped.get(f"{alice}/null-device") == "char-device", skipped
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    for f in [*manifest["files"], *manifest["volumes"]]:
        assert stat.S_IMODE((dest / f["file"]).stat().st_mode) == 0o600, f["file"]
    # a second backup into the same place is refused
    assert cli(hub, "backup", str(dest)).returncode == 2

    # restore refuses to overwrite the running deployment, and changes nothing
    out = cli(hub, "restore", str(dest))
    assert out.returncode == 2 and "is running" in out.stderr and "--force" in out.stderr, out.stderr

    # wipe: down, every volume of the deployment, the secrets and the CA
    hub.deployment.down()
    for name in deployment_volumes(client) + [v["source"] for v in manifest["volumes"] if v["role"] == "data"]:
        try:
            client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    assert deployment_volumes(client) == []
    shutil.rmtree(hub.deployment.paths.secrets)
    shutil.rmtree(hub.deployment.paths.tls)

    # a damaged backup is refused before anything is written
    damaged = tmp_path / "damaged"
    shutil.copytree(dest, damaged)
    with open(damaged / "volumes" / "hub-state.tar", "r+b") as f:
        f.seek(600)
        f.write(b"X")
    out = cli(hub, "restore", str(damaged))
    assert out.returncode == 2 and "damaged" in out.stderr, out.stderr
    assert deployment_volumes(client) == []

    out = cli(hub, "restore", str(dest))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((hub.deployment.paths.secrets / "admin-token").stat().st_mode) == 0o600
    assert stat.S_IMODE(hub.deployment.paths.secrets.stat().st_mode) == 0o700
    hub.deployment.up()

    # users, groups, the session lock, the course, the tutorial password, the home files
    assert hub.api("GET", f"/users/{alice}").status_code == 200
    assert sorted(hub.api("GET", f"/groups/{group}").json()["users"]) == sorted([alice, bob])
    sessions = service(hub, SESSIONS, "GET", "sessions").json()["sessions"]
    assert any(s["name"] == session and s["tag"] == stack_tags[1] and s["status"] == "active" for s in sessions)
    courses = service(hub, COURSES, "GET", "courses").json()["courses"]
    assert course in [c["course"] for c in courses], courses
    hub.session(alice, password)  # logs in with her own password, never the room code
    model = hub.spawn(alice)
    assert model["servers"][""]["ready"]
    code, text = sh(hub, alice, "cat ~/work/kept.txt && stat -c '%u %a' ~/work && stat -c %u ~")
    assert code == 0 and text.split() == ["my", "results", "1000", "700", "1000"], text
    # the junk *.sqlite came back as the bytes it was, the link as a link; no special file came back
    code, text = sh(hub, alice, "cat ~/notes.sqlite && readlink ~/escape && ls -A ~")
    assert code == 0 and text.splitlines()[:2] == ["not a database", "/etc"], text
    assert not {"pipe", "sock", "null-device"} & set(text.split()), text
    assert f"stackhub/lsst-stack:{stack_tags[1]}" in client.containers.get(container_name(alice)).image.tags
    service(hub, SESSIONS, "DELETE", f"sessions/{q}")
    hub.stop(alice)
    assert anonymous_mounts(client) == {}


def test_a_broken_home_is_reported_and_never_stops_the_others_and_restore_checks_first(hub, user, tmp_path):
    """A home its helper cannot read (root's, 0700, as a failing disk or a stray chown would leave it)
    fails alone: the backup holds every other volume and exits 1 naming it. A restore whose archive
    would write outside its volume is refused before it stops or empties anything."""
    import io
    import tarfile

    client = hub.client
    ok = user("bk")
    hub.spawn(ok)
    assert sh(hub, ok, "echo fine > ~/fine.txt")[0] == 0
    broken = f"{TEST_PREFIX}-home-broken-{uuid.uuid4().hex[:6]}"
    client.volumes.create(broken, labels={"stackhub.deployment": TEST_PREFIX, "stackhub.role": "home",
                                          "stackhub.user": f"zz-{broken[-6:]}"})
    image = next(iter(client.images.list(name="stackhub/lsst-stack")))
    try:
        client.containers.run(image.id, ["sh", "-c", "echo x > /v/f && chown 0:0 /v && chmod 700 /v"], entrypoint=[],
                              user="0", volumes={broken: {"bind": "/v", "mode": "rw"}}, network_disabled=True,
                              remove=True)
        dest = tmp_path / "backup"
        out = cli(hub, "backup", str(dest), "--homes")
        assert out.returncode == 1 and broken in out.stderr, out.stdout + out.stderr
        manifest = json.loads((dest / "manifest.json").read_text())
        assert [f["source"] for f in manifest["failed"]] == [broken]
        assert {"hub-state", "courses"} <= {v["role"] for v in manifest["volumes"]}
        entry = next(v for v in manifest["volumes"] if v.get("user") == ok)

        # one member of ok's home archive now points outside it; the manifest is made to agree
        path = dest / entry["file"]
        with tarfile.open(path, "a") as tar:
            info = tarfile.TarInfo("../../escaped.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        from spawner.deploy.backup import sha256

        entry.update(bytes=path.stat().st_size, sha256=sha256(path))
        manifest["failed"] = []
        (dest / "manifest.json").write_text(json.dumps(manifest))
        out = cli(hub, "restore", str(dest), "--force")
        assert out.returncode == 2 and "refused" in out.stderr and entry["file"] in out.stderr, out.stderr
        assert hub.api("GET", f"/users/{ok}").status_code == 200  # the deployment was not stopped
        assert sh(hub, ok, "cat ~/fine.txt") == (0, "fine\n")  # and the home not emptied
    finally:
        client.volumes.get(broken).remove(force=True)
        hub.stop(ok)


def test_deleting_a_user_stops_every_server_and_keeps_the_home_unless_purged(hub, user):
    client = hub.client
    carol = user("del")
    hub.spawn(carol)
    hub.spawn(carol, server="second")
    assert sh(hub, carol, "echo mine > ~/mine.txt")[0] == 0
    # JupyterHub alone stops only the default server and then fails with 500 on the named one
    r = hub.api("DELETE", f"/users/{carol}")
    assert r.status_code == 204, r.text
    deadline = time.monotonic() + 30
    while client.containers.list(all=True, filters={"label": f"stackhub.user={carol}"}):
        assert time.monotonic() < deadline, "the deleted user's containers are still there"
        time.sleep(0.5)
    assert hub.api("GET", f"/users/{carol}").status_code == 404
    client.volumes.get(home_volume_name(carol))  # kept by default
    logs = client.containers.get(OWN.hub).logs(tail=200).decode()
    assert f"user {carol} deleted; home volume {home_volume_name(carol)} kept" in logs

    # the kept home is stale: prune lists it with its size, --dry-run deletes nothing
    out = cli(hub, "users", "prune", "--inactive", "30d", "--dry-run")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(carol + " "))
    assert home_volume_name(carol) in line and "user deleted" in line and ("KiB" in line or " B " in line), line
    client.volumes.get(home_volume_name(carol))
    assert cli(hub, "users", "prune", "--inactive", "soon").returncode == 2

    # `users delete NAME --purge` on the already deleted user deletes the kept home, and says so
    out = cli(hub, "users", "delete", carol, "--purge")
    assert out.returncode == 0 and f"deleted home volume {home_volume_name(carol)}" in out.stdout, out.stdout + out.stderr
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(home_volume_name(carol))

    # through the CLI: the user and both servers go, the home stays and the output says so
    dave = user("del")
    hub.spawn(dave)
    hub.spawn(dave, server="two")
    out = cli(hub, "users", "delete", dave)
    assert out.returncode == 0, out.stderr
    assert f"deleted user {dave}; stopped their servers: (default), two" in out.stdout
    assert f"kept home volume {home_volume_name(dave)}" in out.stdout and "--purge" in out.stdout
    assert not client.containers.list(all=True, filters={"label": f"stackhub.user={dave}"})
    assert cli(hub, "users", "delete", f"nobody-{uuid.uuid4().hex[:4]}").returncode == 2
    assert anonymous_mounts(client) == {}
