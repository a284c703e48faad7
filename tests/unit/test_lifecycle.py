"""The pure parts of faults and the user lifecycle: orphan containers, stale homes, ages, backups."""

import datetime as dt
import json

import pytest

from spawner.cli.client import ApiError
from spawner.cli.ops import parse_age, stale_homes
from spawner.core.config import StackhubConfig
from spawner.core.orphans import ServerObject, active_servers, orphans
from spawner.deploy.backup import (BackupError, VolumeItem, dated_dir, plan_volumes, read_manifest, restore_target,
                                   upgrade_reasons)

A = ServerObject("ann", "", "p-user-ann")
B = ServerObject("bob", "two", "p-user-bob--two")


def test_a_container_is_an_orphan_only_after_grace_seconds_unknown_in_a_row():
    active = active_servers([{"name": "ann", "servers": {"": {"ready": True}}}, {"name": "bob", "servers": {}}])
    assert active == {("ann", "")}
    remove, seen = orphans([A, B], active, {}, now=100, grace=30)
    assert remove == [] and seen == {"p-user-bob--two": 100}
    remove, seen = orphans([A, B], active, seen, now=129, grace=30)
    assert remove == []
    remove, seen = orphans([A, B], active, seen, now=130, grace=30)
    assert remove == [B]


def test_a_container_the_hub_knows_again_starts_its_grace_over():
    _, seen = orphans([B], set(), {}, now=0, grace=30)
    _, seen = orphans([B], {("bob", "two")}, seen, now=20, grace=30)  # pending: a spawn in flight
    assert seen == {}
    remove, _ = orphans([B], set(), seen, now=40, grace=30)
    assert remove == []


@pytest.mark.parametrize("text,expected", [("30d", dt.timedelta(days=30)), ("2w", dt.timedelta(weeks=2)),
                                           ("12h", dt.timedelta(hours=12)), ("90m", dt.timedelta(minutes=90))])
def test_ages(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "-1d", "1y", "soon", "1.5d"])
def test_a_bad_age_names_the_units(text):
    with pytest.raises(ApiError, match="m, h, d or w"):
        parse_age(text)


def test_stale_homes_are_of_deleted_or_long_inactive_users_never_of_running_ones():
    now = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    old, recent = "2026-09-01T00:00:00Z", "2026-11-20T00:00:00Z"
    homes = {"gone": "h-gone", "idle": "h-idle", "busy": "h-busy", "fresh": "h-fresh", "new": "h-new"}
    users = {"gone": None,
             "idle": {"last_activity": old, "servers": {}},
             "busy": {"last_activity": old, "servers": {"": {}}},
             "fresh": {"last_activity": recent, "servers": {}},
             "new": {"last_activity": None, "created": recent, "servers": {}}}
    stale = stale_homes(homes, users, now - dt.timedelta(days=30))
    assert [(u, v) for u, v, _ in stale] == [("gone", "h-gone"), ("idle", "h-idle")]
    assert stale[0][2] == "user deleted" and "2026-09-01" in stale[1][2]


def test_a_backup_holds_state_and_courses_and_homes_and_data_only_when_asked():
    cfg = StackhubConfig.model_validate({"volumes": {"data": [{"source": "d1", "target": "/data"},
                                                              {"source": "/srv/cat", "target": "/data/cat"}]}})
    assert [i.role for i in plan_volumes(cfg, {}, False)] == ["hub-state", "courses"]
    items = plan_volumes(cfg, {"Ann": "stackhub-home-Ann"}, True)
    assert [(i.role, i.source) for i in items] == [("hub-state", "stackhub-hub-state"), ("courses", "stackhub-courses"),
                                                   ("home", "stackhub-home-Ann"), ("data", "d1")]
    assert items[2].file == "volumes/home--41nn.tar"  # escaped: Ann and ann never share a file
    assert [i.role for i in plan_volumes(cfg, {}, False, courses=False)] == ["hub-state"]  # before an upgrade


def test_up_backs_up_before_a_new_hub_image_or_a_migration_never_on_a_fresh_or_unchanged_deployment():
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    kw = dict(running_ref="stackhub/hub:0.1.0-old", new_ref="stackhub/hub:0.1.0-new")
    changed = upgrade_reasons(running_image=old, new_image=new, revision="f460b0348206", head="f460b0348206", **kw)
    assert changed == ["the hub image changes: stackhub/hub:0.1.0-old (aaaaaaaaaaaa) -> stackhub/hub:0.1.0-new "
                       "(bbbbbbbbbbbb)"]
    # after `make down` there is no hub container: the database's revision tells
    migrates = upgrade_reasons(running_image=None, new_image=new, revision="4621fec11365", head="f460b0348206", **kw)
    assert migrates == ["the database is at revision 4621fec11365; the new hub's JupyterHub migrates it to f460b0348206"]
    assert len(upgrade_reasons(running_image=old, new_image=new, revision="4621fec11365", head="f460b0348206",
                               **kw)) == 2
    assert upgrade_reasons(running_image=None, new_image=new, revision=None, head="f460b0348206", **kw) == []
    assert upgrade_reasons(running_image=old, new_image=new, revision=None, head="f460b0348206", **kw) == []
    assert upgrade_reasons(running_image=new, new_image=new, revision="f460b0348206", head="f460b0348206", **kw) == []


def test_backups_before_upgrades_are_dated_and_never_overwrite_each_other(tmp_path):
    now = dt.datetime(2026, 11, 27, 15, 4, 5, tzinfo=dt.timezone.utc)
    first = dated_dir(tmp_path, "pre-upgrade", now)
    assert first.name == "pre-upgrade-20261127T150405Z"
    first.mkdir()
    assert dated_dir(tmp_path, "pre-upgrade", now).name == "pre-upgrade-20261127T150405Z-2"


def test_a_restore_follows_the_current_configs_names():
    cfg = StackhubConfig.model_validate({"hub": {"prefix": "other", "stateVolume": "other-state"},
                                         "volumes": {"homeVolume": "other-home-{user}"}})
    assert restore_target(cfg, VolumeItem("hub-state", "stackhub-hub-state", "volumes/hub-state.tar")) == "other-state"
    assert restore_target(cfg, VolumeItem("home", "stackhub-home-ann", "volumes/home-ann.tar", "ann")) == "other-home-ann"
    assert restore_target(cfg, VolumeItem("data", "gone-data", "volumes/data-gone-data.tar")) is None


@pytest.mark.parametrize("manifest,needle", [
    ({"format": "tar"}, "format"),
    ({"format": "stackhub-backup/1", "volumes": [], "files": [{"file": "../etc/passwd", "bytes": 1, "sha256": "x"}]},
     "names no file"),
    ({"format": "stackhub-backup/1", "volumes": [{"file": "volumes/x.tar", "bytes": 1, "sha256": "x",
                                                   "role": "root", "source": "v"}], "files": []}, "role"),
    ({"format": "stackhub-backup/1", "volumes": [{"file": "volumes/x.tar", "bytes": 1, "sha256": "x",
                                                   "role": "home", "source": "v"}], "files": []}, "names no user"),
])
def test_a_hostile_manifest_is_refused(tmp_path, manifest, needle):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=needle):
        read_manifest(tmp_path)
