import json
import logging

import pytest

from spawner.core.config import StackhubConfig, memory_bytes
from spawner.core.disk import Budget, Record, decide, human, measure_homes, message, ready_servers
from spawner.hub.disk_store import DiskNotices, load_records, save_records

MB = 2**20
B = Budget(limit=100 * MB, warn=0.9, grace=600)
T0 = 1_800_000_000.0


def step(sizes, running, records, now=T0):
    return decide(sizes, running, records, B, now)


def test_under_the_warning_level_nothing_happens():
    assert step({"ann": 50 * MB}, {"ann": [""]}, {}) == ({}, [])


def test_at_ninety_percent_a_running_server_is_warned_once():
    records, actions = step({"ann": 91 * MB}, {"ann": [""]}, {})
    assert [(a.kind, a.user, a.servers) for a in actions] == [("warn", "ann", ("",))]
    assert "91 MiB of its 100 MiB disk budget (91%)" in actions[0].message
    assert records["ann"].status == "warn" and records["ann"].warned
    records, actions = step({"ann": 95 * MB}, {"ann": [""]}, records, T0 + 60)
    assert actions == [] and records["ann"].size == 95 * MB


def test_a_warning_waits_for_a_running_server():
    records, actions = step({"ann": 92 * MB}, {}, {})
    assert actions == [] and records["ann"].status == "warn" and not records["ann"].warned
    records, actions = step({"ann": 92 * MB}, {"ann": ["gpu"]}, records, T0 + 60)
    assert [(a.kind, a.servers) for a in actions] == [("warn", ("gpu",))]


def test_over_the_budget_every_ready_server_stops_and_other_users_are_untouched():
    records, actions = step({"ann": 105 * MB, "bob": 99 * MB, "cy": MB},
                            {"ann": ["", "big"], "bob": [""], "cy": [""]}, {})
    stop = [a for a in actions if a.kind == "stop"]
    assert [(a.user, a.servers) for a in stop] == [("ann", ("", "big"))]
    assert "105 MiB of its 100 MiB disk budget; your server was stopped at" in stop[0].message
    assert "10 minutes" in stop[0].message
    assert records["ann"].status == "over" and records["ann"].stopped_at == T0
    assert [a.user for a in actions if a.kind == "warn"] == ["bob"]
    assert "cy" not in records


def test_a_restart_after_the_stop_gets_the_grace_window_to_clean_up():
    records, _ = step({"ann": 105 * MB}, {"ann": [""]}, {})
    records, actions = step({"ann": 105 * MB}, {}, records, T0 + 30)  # stopped
    assert actions == [] and records["ann"].status == "over"
    records, actions = step({"ann": 105 * MB}, {"ann": [""]}, records, T0 + 90)  # started again
    assert records["ann"].status == "grace" and records["ann"].grace_until == T0 + 90 + 600
    assert [a.kind for a in actions] == ["warn"] and "may run until" in actions[0].message
    records, actions = step({"ann": 103 * MB}, {"ann": [""]}, records, T0 + 150)  # deleting: fine
    assert actions == [] and records["ann"].status == "grace"
    records, actions = step({"ann": 80 * MB}, {"ann": [""]}, records, T0 + 210)  # done
    assert [a.kind for a in actions] == ["clear"] and "ann" not in records


def test_growing_during_the_grace_window_stops_at_once():
    records = {"ann": Record("grace", 105 * MB, T0, grace_until=T0 + 600, ceiling=105 * MB)}
    records, actions = step({"ann": 106 * MB}, {"ann": [""]}, records, T0 + 60)
    assert [a.kind for a in actions] == ["stop"] and records["ann"].status == "over"


def test_still_over_when_the_grace_window_ends_stops_again():
    records = {"ann": Record("grace", 105 * MB, T0, grace_until=T0 + 600, ceiling=105 * MB)}
    records, actions = step({"ann": 101 * MB}, {"ann": [""]}, records, T0 + 600)
    assert [a.kind for a in actions] == ["stop"] and records["ann"].stopped_at == T0 + 600
    # and the next start gets a new window
    records, _ = step({"ann": 101 * MB}, {}, records, T0 + 660)
    records, _ = step({"ann": 101 * MB}, {"ann": [""]}, records, T0 + 720)
    assert records["ann"].status == "grace" and records["ann"].grace_until == T0 + 720 + 600


def test_a_lost_record_fails_safe_a_running_server_over_budget_stops():
    _, actions = step({"ann": 200 * MB}, {"ann": [""]}, {})
    assert [a.kind for a in actions] == ["stop"]


def test_over_without_a_server_is_recorded_for_the_spawn_page_not_stopped():
    records, actions = step({"ann": 200 * MB}, {}, {})
    assert actions == [] and records["ann"].status == "over" and records["ann"].stopped_at is None
    text = message(records["ann"], B, T0)
    assert text.startswith("Your home uses 200 MiB of its 100 MiB disk budget. You can start your server to "
                           "delete files: you then have 10 minutes")


def test_back_under_the_warning_level_without_a_server_clears_later():
    records = {"ann": Record("warn", 95 * MB, T0, warned=True)}
    records, actions = step({"ann": 10 * MB}, {}, records, T0 + 60)
    assert actions == [] and records["ann"].status == "clear"
    records, actions = step({"ann": 10 * MB}, {"ann": [""]}, records, T0 + 120)
    assert [a.kind for a in actions] == ["clear"] and records == {}


def test_a_user_whose_home_is_gone_loses_the_record():
    records = {"ann": Record("over", 200 * MB, T0)}
    assert step({}, {}, records) == ({}, [])


def test_measure_homes_counts_only_labelled_homes_with_their_configured_name():
    from types import SimpleNamespace

    from spawner.backends.docker.engine import DockerEngine
    from spawner.core.config import StackhubConfig

    df = {"Volumes": [
        {"Name": "stackhub-home-ann", "Labels": {"stackhub.role": "home", "stackhub.user": "ann"},
         "UsageData": {"Size": 123, "RefCount": 1}},
        {"Name": "stackhub-home-j-C3-BCrgen", "Labels": {"stackhub.role": "home", "stackhub.user": "jürgen"},
         "UsageData": {"Size": 5, "RefCount": 0}},
        {"Name": "sneaky", "Labels": {"stackhub.role": "home", "stackhub.user": "bob"}, "UsageData": {"Size": 9}},
        {"Name": "stackhub-hub-state", "Labels": {"stackhub.role": "hub-state"}, "UsageData": {"Size": 9}},
        {"Name": "stackhub-home-cy", "Labels": {"stackhub.role": "home", "stackhub.user": "cy"},
         "UsageData": {"Size": -1}},
        {"Name": "anon", "Labels": None, "UsageData": None},
    ]}

    def usage(df):  # what Docker's engine hands the services (docker system df)
        return DockerEngine(StackhubConfig(), client=SimpleNamespace(df=lambda: df)).volume_usage()
    assert measure_homes(usage(df), "stackhub-home-{user}") == {"ann": 123, "jürgen": 5}
    assert measure_homes(usage({"Volumes": None}), "x-{user}") == {}


def test_ready_servers_leaves_pending_ones_to_the_next_check():
    users = [{"name": "ann", "servers": {"": {"ready": True, "pending": None}, "b": {"ready": False, "pending": "spawn"}}},
             {"name": "bob", "servers": {}}]
    assert ready_servers(users) == {"ann": [""]}


def test_records_round_trip_and_bad_ones_are_dropped(tmp_path, caplog):
    path = tmp_path / "disk-budget.json"
    records = {"ann": Record("grace", 105 * MB, T0, True, T0, T0 + 600, 105 * MB), "bob": Record("warn", 95 * MB, T0)}
    save_records(path, records, T0, B)
    assert load_records(path) == records
    assert [p.name for p in tmp_path.iterdir()] == ["disk-budget.json"]  # no temporary file left
    data = json.loads(path.read_text())
    data["users"]["bob"]["size"] = "huge"
    data["users"]["cy"] = {"status": "over", "size": 1, "since": 0, "extra": 1}
    data["users"]["dee"] = {"status": "boom", "size": 1, "since": 0}
    data["users"]["eve"] = {"status": "warn", "size": True, "since": 0}
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.ERROR):
        assert load_records(path) == {"ann": records["ann"]}
    assert "bob" in caplog.text and "cy" in caplog.text


@pytest.mark.parametrize("content", ["not json", "[]", '{"version": 2, "users": {}}', '{"version": 1, "users": []}'])
def test_a_corrupt_state_file_is_ignored(tmp_path, content):
    path = tmp_path / "disk-budget.json"
    path.write_text(content)
    assert load_records(path) == {}


def test_a_missing_state_file_is_empty(tmp_path):
    assert load_records(tmp_path / "nope.json") == {}


def test_the_spawn_page_notice_is_escaped_and_follows_the_file(tmp_path):
    notices = DiskNotices(tmp_path, B)
    assert notices.notice_html("ann") == ""
    save_records(tmp_path / "disk-budget.json", {"a<b>": Record("over", 105 * MB, T0, stopped_at=T0)}, T0, B)
    html = notices.notice_html("a<b>")
    assert 'id="disk-budget"' in html and 'data-status="over"' in html
    assert "Your home uses 105 MiB of its 100 MiB disk budget; your server was stopped at" in html
    assert "<b>" not in html.split(">", 1)[1]
    save_records(tmp_path / "disk-budget.json", {"a<b>": Record("clear", MB, T0)}, T0 + 1, B)
    import os
    os.utime(tmp_path / "disk-budget.json", (T0 + 5, T0 + 5))
    assert notices.notice_html("a<b>") == ""


def test_human_sizes():
    assert human(10 * 2**30) == "10 GiB"
    assert human(int(10.4 * 2**30)) == "10.4 GiB"
    assert human(512 * MB) == "512 MiB"
    assert human(12) == "12 B"


def test_budget_config_defaults_and_checks():
    v = StackhubConfig().volumes
    assert (v.home_budget, v.home_budget_warn, v.home_budget_check_seconds) == ("10G", 0.9, 60)
    assert v.home_budget_bytes == 10 * 2**30
    v = StackhubConfig.model_validate({"volumes": {"homeBudget": None}}).volumes
    assert v.home_budget_bytes is None
    for bad in ({"homeBudget": "10GB"}, {"homeBudget": "0"}, {"homeBudgetWarn": 1.0}, {"homeBudgetWarn": 0},
                {"homeBudgetCheckSeconds": 0}, {"homeBudgetGraceSeconds": -1}):
        with pytest.raises(ValueError):
            StackhubConfig.model_validate({"volumes": bad})
    assert memory_bytes("1.5G") == 3 * 2**29 and memory_bytes("512") == 512 and memory_bytes("2T") == 2 * 2**40


class FakeContainer:
    def __init__(self, user, ok=True):
        self.name, self.status, self.ok = f"stackhub-user-{user}", "running", ok
        self.id = self.name
        self.labels = {"stackhub.role": "server", "stackhub.user": user, "stackhub.server": ""}
        self.execs = []

    def run(self, cmd, user, environment):
        self.execs.append((cmd, user, environment))
        return (0, [(b"", None)]) if self.ok else (1, [(None, b"No space left on device")])


class FakeClient:
    def __init__(self, sizes, containers):
        from tests.support.fake_exec import FakeExecAPI

        self.sizes, self.containers = sizes, self
        self.by_name = {c.name: c for c in containers}
        self.api = FakeExecAPI(lambda cid, argv, user, env: self.by_name[cid].run(argv, user, env))

    def df(self):
        return {"Volumes": [{"Name": f"stackhub-home-{u}", "Labels": {"stackhub.role": "home", "stackhub.user": u},
                             "UsageData": {"Size": s}} for u, s in self.sizes.items()]}

    def get(self, name):
        from docker.errors import NotFound

        if name not in self.by_name:
            raise NotFound(name)
        return self.by_name[name]


class FakeHub:
    def __init__(self, running):
        self.running, self.stopped = running, []

    async def users(self, state=None):
        assert state == "active"
        return [{"name": u, "servers": {"": {"ready": True, "pending": None}}} for u in self.running]

    async def stop_server(self, user, server=""):
        self.stopped.append((user, server))


def watcher(tmp_path, sizes, containers, running):
    from spawner.services.diskwatch import Watcher

    from spawner.backends.docker.engine import DockerEngine
    from spawner.core.config import StackhubConfig

    engine = DockerEngine(StackhubConfig(), client=FakeClient(sizes, containers))
    return Watcher(engine=engine, hub=FakeHub(running), budget=B,
                   state_path=tmp_path / "disk-budget.json", template="stackhub-home-{user}", uid=1000, every=1)


def test_the_watcher_writes_as_the_user_stops_through_the_hub_and_saves_state(tmp_path):
    import asyncio

    ann, bob = FakeContainer("ann"), FakeContainer("bob")
    w = watcher(tmp_path, {"ann": 120 * MB, "bob": 95 * MB}, [ann, bob], ["ann", "bob"])
    asyncio.run(w.check(now=T0))
    assert w.hub.stopped == [("ann", "")]
    (cmd, uid, env), = ann.execs
    assert uid == "1000" and cmd[:2] == ["sh", "-c"] and 'mv -f "$t" "$f"' in cmd[2]
    assert env["STACKHUB_NOTICE_FILE"] == "DISK-QUOTA-WARNING.txt" and "stopped" in env["STACKHUB_NOTICE"]
    assert "(95%)" in bob.execs[0][2]["STACKHUB_NOTICE"]
    assert set(load_records(tmp_path / "disk-budget.json")) == {"ann", "bob"}


def test_a_warning_that_could_not_be_written_is_tried_again(tmp_path):
    import asyncio

    full = FakeContainer("ann", ok=False)
    w = watcher(tmp_path, {"ann": 95 * MB}, [full], ["ann"])
    asyncio.run(w.check(now=T0))
    assert not w.records["ann"].warned
    full.ok = True
    asyncio.run(w.check(now=T0 + 60))
    assert w.records["ann"].warned and len(full.execs) == 2


def test_low_space_where_the_hub_state_lives_is_logged(tmp_path, monkeypatch, caplog):
    import shutil

    w = watcher(tmp_path, {}, [], [])
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 10 * MB))
    with caplog.at_level(logging.ERROR):
        w._check_state_space()
    assert "only 10 MiB free on the filesystem of the hub's state" in caplog.text


def test_a_stop_the_hub_refused_is_tried_again_not_taken_for_a_restart(tmp_path):
    import asyncio

    w = watcher(tmp_path, {"ann": 120 * MB}, [FakeContainer("ann")], ["ann"])

    async def refuse(user, server=""):
        raise RuntimeError("503: hub busy")
    w.hub.stop_server = refuse
    asyncio.run(w.check(now=T0))
    assert "ann" not in w.records
    w.hub = FakeHub(["ann"])
    asyncio.run(w.check(now=T0 + 60))
    assert w.hub.stopped == [("ann", "")] and w.records["ann"].status == "over"


def test_the_spawner_puts_the_notice_above_its_form_and_never_fails_on_it(tmp_path):
    from types import SimpleNamespace

    from spawner.backends.docker.spawner import LSSTDockerSpawner

    save_records(tmp_path / "disk-budget.json", {"ann": Record("warn", 95 * MB, T0)}, T0, B)
    class Notices(DiskNotices):  # this test's own class: the spawner shares one instance per class
        @classmethod
        def for_state(cls, state_dir, cfg):
            return cls(state_dir, B)

    sp = LSSTDockerSpawner(disk_notices_class=Notices, state_dir=str(tmp_path))
    sp.user = SimpleNamespace(name="ann")
    assert 'data-status="warn"' in sp.disk_notice()

    class Broken:
        @classmethod
        def for_state(cls, state_dir, cfg):
            return cls()

        def notice_html(self, name):
            raise OSError("boom")
    sp.disk_notices_class = Broken
    assert sp.disk_notice() == ""


def test_a_home_with_millions_of_files_does_not_blind_the_watch_for_the_others(tmp_path, monkeypatch, caplog):
    """The engine's all-at-once measurement times out (one home holds up its walk): each running
    user's home is then measured on its own; the one that cannot be keeps its last size, an error
    measuring one does not stop the next, and the user over the budget is still stopped."""
    import asyncio
    import time as time_

    from spawner.services import diskwatch

    monkeypatch.setattr(diskwatch, "DF_TIMEOUT", 0.2)
    w = watcher(tmp_path, {}, [FakeContainer("ann"), FakeContainer("bob"), FakeContainer("cy")],
                ["ann", "bob", "cy", "dee"])

    def slow_df():
        time_.sleep(1)
        return []

    measured = []

    def home_size(volume, *, timeout):
        measured.append((volume, timeout))
        if volume.endswith("-ann"):
            return None  # du did not finish in time
        if volume.endswith("-bob"):
            raise RuntimeError("helper could not start")
        return {"stackhub-home-cy": 120 * MB, "stackhub-home-dee": 10 * MB}[volume]

    w.engine.volume_usage, w.engine.home_size = slow_df, home_size
    w.records = {"ann": Record("warn", 95 * MB, T0 - 60, warned=True)}
    with caplog.at_level(logging.INFO, "stackhub.diskwatch"):
        asyncio.run(w.check(now=T0))
    assert [v for v, _ in measured] == [f"stackhub-home-{u}" for u in ("ann", "bob", "cy", "dee")]
    assert all(t == diskwatch.HOME_TIMEOUT for _, t in measured)
    assert w.hub.stopped == [("cy", "")]
    assert w.records["ann"].size == 95 * MB and "bob" not in w.records
    assert "the home of ann could not be measured" in caplog.text and "helper could not start" in caplog.text
