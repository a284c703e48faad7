"""The hub runs the current JupyterHub major, and a database of the previous one still opens."""

import logging
import os
import sqlite3
import sys
from pathlib import Path

import jupyterhub
from jupyterhub import dbutil, orm
from packaging.version import Version
from traitlets.config import Config

from spawner.core.config import StackhubConfig
from spawner.hub.apply import HubInputs, HubPaths, apply_config

FIXTURE = Path(__file__).parent / "fixtures" / "jupyterhub-5.5.4.sql"


def test_the_hub_and_the_single_user_servers_run_jupyterhub_6():
    assert Version(jupyterhub.__version__).major == 6
    pins = (Path(__file__).resolve().parents[2] / "constraints.txt").read_text().splitlines()
    assert f"jupyterhub=={jupyterhub.__version__}" in pins  # the images install with the same constraints


def test_a_jupyterhub_5_database_is_backed_up_and_migrated_with_users_and_groups_kept(tmp_path, monkeypatch):
    db = tmp_path / "jupyterhub.sqlite"
    con = sqlite3.connect(db)
    con.executescript(FIXTURE.read_text())
    con.close()
    # what the hub does on start with upgrade_db (alembic runs as a command, from the hub's environment)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    c = apply_config(Config(), StackhubConfig(), HubPaths(state=tmp_path, secrets=tmp_path),
                     HubInputs(secrets={"proxy-token": "p", "admin-token": "a", "shared-password": "r",
                                        "admin-password": "x"}))
    assert c.JupyterHub.upgrade_db is True and c.JupyterHub.db_url == f"sqlite:///{db}"
    dbutil.upgrade_if_needed(c.JupyterHub.db_url, log=logging.getLogger("test"))
    session = orm.new_session_factory(c.JupyterHub.db_url)()  # raises if the schema is still old
    assert sorted(u.name for u in session.query(orm.User)) == ["ann", "ivy"]
    assert [u.name for u in session.query(orm.Group).filter_by(name="instructors").one().users] == ["ivy"]
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("jupyterhub.sqlite.")]
    assert len(backups) == 1  # the 5.5.4 file, copied aside before the migration
