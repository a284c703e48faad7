"""Upgrades: ``up`` over a running older deployment backs up the hub database first, then replaces the
hub; users' running servers keep running, and the database ends at the new JupyterHub's revision.

Two ways an upgrade arrives: a new hub image over a running hub (the image ID differs), and a new
hub after ``make down`` whose JupyterHub migrates the database (its alembic revision differs; here a
JupyterHub 5.5.4 database, tests/unit/fixtures/jupyterhub-5.5.4.sql).
"""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import tarfile
import time
from pathlib import Path

import docker
import jupyterhub
import requests
import yaml
from alembic.script import ScriptDirectory

from spawner.core import names
from spawner.core.config import load_config
from spawner.deploy.backup import Archiver, read_manifest, sha256
from spawner.deploy.single_host import Deployment, HostPaths

from .hubfixture import OWN, checkout_hub_image, container_name
from .test_faults import reachable, until

HEAD = ScriptDirectory(os.path.join(os.path.dirname(jupyterhub.__file__), "alembic")).get_current_head()
FIXTURE = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "jupyterhub-5.5.4.sql"
OLDER = "stackhub-test/hub:older"


def backups(paths: HostPaths) -> set[Path]:
    root = paths.root / "backups"
    return set(root.iterdir()) if root.is_dir() else set()


def backed_up_db(dest: Path, tmp: Path) -> sqlite3.Connection:
    """The hub database in a backup, checked as `stackhub restore` would check it, opened with sqlite."""
    manifest = read_manifest(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700 and stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    for entry in [*manifest["volumes"], *manifest["files"]]:
        path = dest / entry["file"]
        assert sha256(path) == entry["sha256"], entry
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, entry
    assert [v["role"] for v in manifest["volumes"]] == ["hub-state"]  # courses are not the upgrade's
    with tarfile.open(dest / "volumes" / "hub-state.tar") as tar:
        data = tar.extractfile("jupyterhub.sqlite").read()
    copy = tmp / f"{dest.name}.sqlite"
    copy.write_bytes(data)
    con = sqlite3.connect(copy)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return con


def users_in(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM users")}


def test_a_new_hub_image_over_a_running_hub_backs_up_first_and_keeps_the_running_servers(hub, user, tmp_path):
    client, paths = hub.client, hub.deployment.paths
    checkout = checkout_hub_image(client)
    # an "older" hub: the same code under another image ID (what a new release looks like to `up`)
    client.images.build(fileobj=io.BytesIO(f"FROM {checkout}\nLABEL stackhub.test=older-hub\n".encode()),
                        tag=OLDER, rm=True)
    lines: list[str] = []
    try:
        hub.reconfigure({"hub": {"image": OLDER}})
        assert client.containers.get(OWN.hub).attrs["Config"]["Image"] == OLDER
        name = user("upg")
        hub.spawn(name)
        server = client.containers.get(container_name(name))
        before = backups(paths)

        hub.deployment.log = lines.append
        t0 = time.monotonic()
        hub.reconfigure()  # `make up` of this checkout's hub image over the running older one
        took = time.monotonic() - t0
        assert client.containers.get(OWN.hub).attrs["Config"]["Image"] == checkout

        new = backups(paths) - before
        assert len(new) == 1, new
        dest = new.pop()
        assert dest.name.startswith("pre-upgrade-")
        text = "\n".join(lines)
        assert str(dest) in text and "the hub image changes" in text, text
        # taken before the hub was replaced: the order of the progress lines says so
        assert text.index(str(dest)) < text.index("[4/5] proxy and hub containers"), text
        assert name in users_in(backed_up_db(dest, tmp_path))

        # the user's server is the same container, still running, and answers through the new proxy
        server.reload()
        assert server.status == "running" and client.containers.get(container_name(name)).id == server.id
        until(f"{name}'s server answers", lambda: reachable(hub, name), 60)
        assert hub.api("GET", f"/users/{name}").json()["servers"][""]["ready"]
        db = Archiver(client=client, cfg=hub.deployment.cfg, paths=paths, log=lambda m: None).db_revision()
        assert db["revision"] == HEAD == db["head"]

        # `up` again with the same image: nothing to migrate, no new backup
        lines.clear()
        hub.reconfigure()
        assert backups(paths) - before == {dest}
        assert "already: its database is migrated" in "\n".join(lines)
        print(f"\nupgrade over a running hub: up took {took:.1f} s with the backup; {name}'s server kept")
    finally:
        hub.deployment.log = lambda m: None
        if client.containers.get(OWN.hub).attrs["Config"]["Image"] != checkout:
            hub.reconfigure()
        client.images.remove(OLDER)


PREFIX = "stackhub-upgrade"


def test_up_after_down_backs_up_a_jupyterhub_5_database_and_the_hub_migrates_it(docker_client, tmp_path):
    """After `make down`, a new hub finds an older database (JupyterHub 5.5.4): backup, then migration."""
    client = docker_client
    config = {
        "hub": {"prefix": PREFIX, "httpsPort": 9543, "httpPort": 9180, "network": f"{PREFIX}-users",
                "apiNetwork": f"{PREFIX}-internal", "stateVolume": f"{PREFIX}-hub-state",
                "image": checkout_hub_image(client), "adminUsers": ["admin"]},
        "volumes": {"data": [], "homeVolume": f"{PREFIX}-home-{{user}}", "homeBudget": None, "demoData": False},
        "courses": {"volume": f"{PREFIX}-courses", "shipped": []},
        "culler": {"enabled": False},
    }
    config_file = tmp_path / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    cfg = load_config(config_file)
    paths = HostPaths(tmp_path / "var")
    lines: list[str] = []
    dep = Deployment(client=client, cfg=cfg, paths=paths, config_file=config_file, log=lines.append)
    try:
        client.volumes.create(cfg.hub.state_volume, labels=names.Deployment(PREFIX).labels("hub-state"))
        client.containers.run(cfg.hub.image, ["python3", "-c", "import sqlite3; sqlite3.connect("
                                              "'/v/jupyterhub.sqlite').executescript(open('/fixture.sql').read())"],
                              volumes={cfg.hub.state_volume: {"bind": "/v", "mode": "rw"},
                                       str(FIXTURE): {"bind": "/fixture.sql", "mode": "ro"}},
                              user="0", network_disabled=True, remove=True)
        tls = dep.up()
        text = "\n".join(lines)
        [dest] = backups(paths)
        assert str(dest) in text and f"revision 4621fec11365; the new hub's JupyterHub migrates it to {HEAD}" in text
        old = backed_up_db(dest, tmp_path)
        assert old.execute("SELECT version_num FROM alembic_version").fetchone() == ("4621fec11365",)
        assert users_in(old) == {"ann", "ivy"}

        token = (paths.secrets / "admin-token").read_text().strip()
        r = requests.get("https://localhost:9543/hub/api/users", headers={"Authorization": f"token {token}"},
                         verify=str(tls.ca), timeout=30)
        assert r.status_code == 200 and {"ann", "ivy"} <= {u["name"] for u in r.json()}, r.text
        db = Archiver(client=client, cfg=cfg, paths=paths, log=lambda m: None).db_revision()
        assert db["revision"] == HEAD
    finally:
        dep.down()
        for v in client.volumes.list(filters={"label": f"{names.LABEL_DEPLOYMENT}={PREFIX}"}):
            v.remove(force=True)
        for net in (cfg.hub.network, cfg.hub.api_network):
            try:
                client.networks.get(net).remove()
            except docker.errors.NotFound:
                pass
