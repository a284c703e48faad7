"""The run-time tag policy: evaluation (pure), changes, the file store and the spawner adapter."""

import datetime as dt
import json
import os
from types import SimpleNamespace

import pytest

from spawner.core.config import StackhubConfig
from spawner.core.options import OptionsError, Restriction, allowed_tags, build_menu, render_form, validate_options
from spawner.core.policy import (Policy, PolicyError, Session, close_session, hide, open_session, parse_time,
                            recommend, restriction, session_for, show)
from spawner.hub.policy_store import HubPolicy, PolicyStore, PolicyUnavailable

UTC = dt.timezone.utc
NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KNOWN = ["w_2026_43", "w_2026_42", "w_2026_41", "v30_0_0"]
CFG = StackhubConfig()


def at(hour):
    return NOON.replace(hour=hour)


def tutorial(**kw):
    return Session(**{"name": "DM tutorial 2026-12", "tag": "w_2026_41", "group": "dm", **kw})


def rule(policy, *, groups=(), admin=False, now=NOON, user="ann"):
    return restriction(policy, user=user, groups=groups, is_admin=admin, now=now)


# --- evaluation ---------------------------------------------------------------------------------


def test_no_policy_restricts_nobody():
    assert rule(Policy()) == Restriction()


def test_hidden_tags_apply_to_users_not_admins():
    p = Policy(hidden=frozenset({"w_2026_42"}))
    assert rule(p).hidden == {"w_2026_42"}
    assert rule(p, admin=True) == Restriction()


def test_recommended_override_applies_to_everyone():
    p = Policy(recommended="v30_0_0")
    assert rule(p).recommended == "v30_0_0"
    assert rule(p, admin=True).recommended == "v30_0_0"


def test_session_locks_members_of_its_group_only():
    p = Policy(sessions=(tutorial(),))
    r = rule(p, groups=["dm"])
    assert r.only == "w_2026_41" and "DM tutorial 2026-12" in r.reason
    assert rule(p, groups=["other"]).only is None
    assert rule(p, groups=[]).only is None


def test_admins_are_never_locked():
    p = Policy(sessions=(tutorial(group=None),), hidden=frozenset({"v30_0_0"}))
    assert rule(p, groups=["dm"], admin=True) == Restriction()


def test_session_for_everyone():
    p = Policy(sessions=(tutorial(group=None),))
    assert rule(p, groups=[]).only == "w_2026_41"


@pytest.mark.parametrize("start,end,now,locked", [
    (9, 17, 12, True),
    (9, 17, 8, False),      # not started
    (9, 17, 17, False),     # end is exclusive
    (None, 17, 16, True),   # open start
    (9, None, 23, True),    # open end
    (13, None, 12, False),
])
def test_session_window(start, end, now, locked):
    s = tutorial(start=at(start) if start is not None else None, end=at(end) if end is not None else None)
    assert (rule(Policy(sessions=(s,)), groups=["dm"], now=at(now)).only is not None) is locked


def test_group_session_wins_over_everyone_then_latest_start():
    everyone = tutorial(name="all", tag="w_2026_42", group=None)
    early = tutorial(name="early", tag="w_2026_43", start=at(8))
    late = tutorial(name="late", tag="v30_0_0", start=at(10))
    p = Policy(sessions=(everyone, early, late))
    assert session_for(p, ["dm"], NOON).name == "late"
    assert session_for(p, ["x"], NOON).name == "all"


def test_times_are_utc_and_naive_means_utc():
    assert parse_time("2026-12-01T09:00") == at(9)
    assert parse_time("2026-12-01T10:00+01:00") == at(9)
    assert parse_time("2026-12-01T09:00:00Z") == at(9)
    assert parse_time("") is None
    with pytest.raises(PolicyError, match="ISO 8601"):
        parse_time("tomorrow")


@pytest.mark.parametrize("kw,needle", [
    ({"name": ""}, "session name"),
    ({"name": "<script>"}, "session name"),
    ({"tag": "recommended"}, "not a stack tag"),
    ({"tag": "../etc"}, "not a stack tag"),
    ({"start": NOON, "end": at(9)}, "not after start"),
])
def test_bad_sessions_are_refused(kw, needle):
    with pytest.raises(PolicyError, match=needle):
        tutorial(**kw)


# --- changes ------------------------------------------------------------------------------------


def test_hide_and_show():
    p = hide(Policy(), "w_2026_42", effective_recommended="w_2026_43")
    assert p.hidden == {"w_2026_42"}
    assert show(p, "w_2026_42").hidden == frozenset()


def test_the_recommended_tag_cannot_be_hidden_nor_a_hidden_tag_recommended():
    with pytest.raises(PolicyError, match="recommend another"):
        hide(Policy(), "w_2026_43", effective_recommended="w_2026_43")
    p = Policy(hidden=frozenset({"v30_0_0"}))
    with pytest.raises(PolicyError, match="show it"):
        recommend(p, "v30_0_0", known=KNOWN)


def test_recommend_needs_a_known_tag_and_none_goes_back_to_config():
    with pytest.raises(PolicyError, match="no stack image"):
        recommend(Policy(), "w_2020_01", known=KNOWN)
    p = recommend(Policy(), "v30_0_0", known=KNOWN)
    assert p.recommended == "v30_0_0"
    assert recommend(p, None, known=KNOWN).recommended is None


def test_open_replaces_by_name_and_close():
    p = open_session(Policy(), tutorial(), known=KNOWN)
    p = open_session(p, tutorial(tag="w_2026_42"), known=KNOWN)
    assert [s.tag for s in p.sessions] == ["w_2026_42"]
    with pytest.raises(PolicyError, match="no stack image"):
        open_session(p, tutorial(tag="w_2020_01"), known=KNOWN)
    assert close_session(p, "DM tutorial 2026-12").sessions == ()
    with pytest.raises(PolicyError, match="no session 'nope'"):
        close_session(p, "nope")


def test_policy_round_trips_through_json():
    p = Policy(hidden=frozenset({"w_2026_42"}), recommended="v30_0_0",
               sessions=(tutorial(start=at(9), end=at(17), opened_by="admin", opened_at=at(8)),))
    assert Policy.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert Policy.from_json({}) == Policy()
    with pytest.raises(PolicyError, match="newer"):
        Policy.from_json({"version": 99})


# --- the policy applied to the form and the server-side check -----------------------------------


def test_recommended_override_changes_the_default_spawn_and_the_form(catalog):
    r = Restriction(recommended="v30_0_0")
    choice = validate_options({}, catalog, CFG.sizes, default_size="small", restriction=r)
    assert choice.entry.name == "v30_0_0"
    assert build_menu(catalog, r).recommended.name == "v30_0_0"
    assert "Recommended (v30_0_0)" in render_form(build_menu(catalog, r), CFG.sizes, "small")
    # an override naming a tag that is gone leaves the configured one
    assert build_menu(catalog, Restriction(recommended="w_2020_01")).recommended.name == "w_2026_43"


def test_a_hidden_tag_is_refused_as_hidden(catalog):
    r = rule(Policy(hidden=frozenset({"w_2026_42"})))
    with pytest.raises(OptionsError, match="'w_2026_42' is not offered .hidden by an admin.; allowed: recommended, v30_0_0"):
        validate_options({"image_tag": "w_2026_42"}, catalog, CFG.sizes, default_size="small", restriction=r)


def test_locked_form_shows_only_the_session_tag(catalog):
    p = Policy(sessions=(tutorial(),), hidden=frozenset({"w_2026_41"}))
    r = rule(p, groups=["dm"])
    assert allowed_tags(catalog, r) == ["w_2026_41"]
    html = render_form(build_menu(catalog, r), CFG.sizes, "small")
    assert "DM tutorial 2026-12" in html and 'value="w_2026_42"' not in html
    with pytest.raises(OptionsError, match="DM tutorial 2026-12.*w_2026_41"):
        validate_options({"image_tag": "w_2026_42"}, catalog, CFG.sizes, default_size="small", restriction=r)


# --- the store and the spawner adapter ----------------------------------------------------------


def test_store_starts_empty_saves_atomically_and_logs_who(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.load() == Policy()
    store.change(lambda p: hide(p, "w_2026_42", effective_recommended=None), who="admin",
                 action="tags.hide", detail={"tag": "w_2026_42"})
    assert json.loads((tmp_path / "policy.json").read_text())["hidden"] == ["w_2026_42"]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # another process's store (the hub) sees the change
    assert PolicyStore(tmp_path).load().hidden == {"w_2026_42"}
    store.change(lambda p: show(p, "w_2026_42"), who="service:stackhub-admin", action="tags.show",
                 detail={"tag": "w_2026_42"})
    log = store.audit()
    assert [(e["who"], e["action"]) for e in log] == [("service:stackhub-admin", "tags.show"), ("admin", "tags.hide")]


def test_a_refused_change_writes_and_logs_nothing(tmp_path):
    store = PolicyStore(tmp_path)
    with pytest.raises(PolicyError):
        store.change(lambda p: close_session(p, "nope"), who="admin", action="session.close", detail={})
    assert not (tmp_path / "policy.json").exists() and store.audit() == []


def test_reader_cache_follows_the_file(tmp_path):
    writer, reader = PolicyStore(tmp_path), PolicyStore(tmp_path)
    assert reader.load() is reader.load()
    writer.change(lambda p: hide(p, "w_2026_41", effective_recommended=None), who="a", action="x", detail={})
    assert reader.load().hidden == {"w_2026_41"}


async def test_hub_policy_reads_user_groups_and_admin(tmp_path):
    store = PolicyStore(tmp_path)
    store.change(lambda p: open_session(p, tutorial(), known=KNOWN), who="admin", action="session.open", detail={})
    hp = HubPolicy(store, clock=lambda: NOON)
    member = SimpleNamespace(name="ann", admin=False, groups=[SimpleNamespace(name="dm")])
    outsider = SimpleNamespace(name="bob", admin=False, groups=[])
    admin = SimpleNamespace(name="admin", admin=True, groups=[SimpleNamespace(name="dm")])
    assert (await hp.restriction_for(member)).only == "w_2026_41"
    assert (await hp.restriction_for(outsider)).only is None
    assert (await hp.restriction_for(admin)).only is None


# --- fail closed: a bad policy.json keeps the last good policy ------------------------------------

ANN = SimpleNamespace(name="ann", admin=False, groups=[SimpleNamespace(name="dm")])
ADMIN = SimpleNamespace(name="root", admin=True, groups=[])


def locked_store(tmp_path, **kw):
    """A store whose policy locks group dm to w_2026_41 (written through the store, as the service does)."""
    store = PolicyStore(tmp_path, **kw)
    store.change(lambda p: open_session(p, tutorial(), known=KNOWN), who="admin", action="session.open", detail={})
    return store


def corrupt(tmp_path, text):
    """Overwrite policy.json by hand (a new inode and size, as an editor would)."""
    path = tmp_path / "policy.json"
    path.unlink()
    path.write_text(text)


BAD_FILES = {
    "not json": ("{not json", "not valid JSON"),
    "truncated": ('{"version": 1, "sessions": [{"name": "x", "ta', "not valid JSON"),
    "top level a list": ("[]", "top level must be a JSON object"),
    "hidden a string": ('{"hidden": "w_2026_42"}', "hidden must be a list"),
    "sessions an object": ('{"sessions": {"name": "x"}}', "sessions must be a list"),
    "session tag a number": ('{"sessions": [{"name": "x", "tag": 43}]}', "sessions[0]: tag must be a string"),
    "session without tag": ('{"sessions": [{"name": "x"}]}', "sessions[0]: tag must be a string"),
    "session bad time": ('{"sessions": [{"name": "x", "tag": "w_2026_41", "end": "tomorrow"}]}', "sessions[0]: time"),
    "typo in a key": ('{"sesions": []}', "unknown keys sesions"),
    "version a string": ('{"version": "1"}', "version must be an integer"),
    "recommended not a tag": ('{"recommended": "recommended"}', "recommended: 'recommended' is not a stack tag"),
    "hidden tag with a slash": ('{"hidden": ["../x"]}', "hidden[0]:"),
    "not utf-8": (b"\xff\xfe{}".decode("latin-1"), "not"),
}


@pytest.mark.parametrize("text,needle", BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_a_corrupt_or_invalid_policy_keeps_the_last_good_one_and_says_why(tmp_path, text, needle, caplog):
    store = locked_store(tmp_path)
    hp = HubPolicy(store, clock=lambda: NOON)
    assert (await hp.restriction_for(ANN)).only == "w_2026_41"
    if text.startswith("\xff"):
        (tmp_path / "policy.json").write_bytes(text.encode("latin-1"))
    else:
        corrupt(tmp_path, text)
    with caplog.at_level("ERROR"):
        assert (await hp.restriction_for(ANN)).only == "w_2026_41"  # the lock holds
    state = store.state()
    assert state.source == "last-good" and not state.ok
    assert str(tmp_path / "policy.json") in state.problem and needle in state.problem, state.problem
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and str(tmp_path / "policy.json") in errors[0].getMessage() and needle in errors[0].getMessage()


async def test_a_restarted_hub_with_a_corrupt_file_still_enforces_the_last_good_policy(tmp_path):
    locked_store(tmp_path)
    assert json.loads((tmp_path / "policy.json.last-good").read_text())["sessions"][0]["tag"] == "w_2026_41"
    corrupt(tmp_path, '{"sessions": "oops"}')
    fresh = HubPolicy(PolicyStore(tmp_path), clock=lambda: NOON)  # a new process: nothing in memory
    assert (await fresh.restriction_for(ANN)).only == "w_2026_41"
    assert fresh.state().last_good_at


async def test_the_last_good_policy_is_the_newest_good_one_read(tmp_path):
    store = locked_store(tmp_path)
    # an admin edits the file by hand, validly: that becomes the last good policy
    (tmp_path / "policy.json").unlink()
    (tmp_path / "policy.json").write_text(json.dumps({"sessions": [tutorial(tag="w_2026_42").to_json()]}))
    assert store.load().sessions[0].tag == "w_2026_42"
    corrupt(tmp_path, "{")
    assert PolicyStore(tmp_path).load().sessions[0].tag == "w_2026_42"


async def test_a_corrupt_file_and_no_last_good_refuses_non_admins_with_the_problem(tmp_path, caplog):
    (tmp_path / "policy.json").write_text("{not json")
    hp = HubPolicy(PolicyStore(tmp_path))
    with pytest.raises(PolicyUnavailable) as e, caplog.at_level("ERROR"):
        await hp.restriction_for(ANN)
    message = str(e.value)
    assert "the session policy is unreadable" in message and str(tmp_path / "policy.json") in message
    assert "not valid JSON" in message and "stackhub session repair" in message and "sessions page" in message
    assert any("policy.json" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    # admins are never restricted, so they are not refused
    assert await hp.restriction_for(ADMIN) == Restriction()
    assert hp.state().source == "none"


async def test_the_spawner_turns_an_unusable_policy_into_503_not_500(tmp_path):
    from tornado import web

    from spawner.backends.docker.spawner import LSSTDockerSpawner

    (tmp_path / "policy.json").write_text("[")
    spawner = SimpleNamespace(policy=HubPolicy(PolicyStore(tmp_path)), user=ANN)
    with pytest.raises(web.HTTPError) as e:
        await LSSTDockerSpawner.restriction(spawner)
    assert e.value.status_code == 503 and "the session policy is unreadable" in e.value.log_message


def test_only_an_absent_file_means_the_empty_policy(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.state().source == "absent" and store.load() == Policy()
    (tmp_path / "policy.json").write_text("")
    assert store.state().source == "none"
    with pytest.raises(PolicyUnavailable):
        store.load()


def test_an_unreadable_file_keeps_the_last_good_policy(tmp_path):
    store = locked_store(tmp_path)
    (tmp_path / "policy.json").unlink()
    (tmp_path / "policy.json").mkdir()  # read fails with an OSError (also as root, unlike chmod 000)
    state = store.state()
    assert state.source == "last-good" and "cannot read" in state.problem
    assert store.load().sessions[0].tag == "w_2026_41"


def test_the_problem_is_logged_once_per_bad_file_not_per_spawn(tmp_path, caplog):
    store = locked_store(tmp_path)
    corrupt(tmp_path, "{")
    with caplog.at_level("ERROR"):
        for _ in range(5):
            store.load()
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def test_a_change_while_the_file_is_bad_applies_to_the_last_good_and_keeps_the_bad_file(tmp_path):
    store = locked_store(tmp_path)
    corrupt(tmp_path, "{garbage")
    store.change(lambda p: hide(p, "w_2026_42", effective_recommended=None), who="admin", action="tags.hide",
                 detail={})
    p = PolicyStore(tmp_path).load()
    assert p.hidden == {"w_2026_42"} and p.sessions[0].tag == "w_2026_41"
    assert (tmp_path / "policy.json.rejected").read_text() == "{garbage"
    assert store.state().ok
    assert [e["action"] for e in store.audit()][:2] == ["tags.hide", "policy.replace-unusable"]


def test_without_a_last_good_policy_changes_are_refused_until_an_explicit_repair(tmp_path):
    (tmp_path / "policy.json").write_text("{")
    store = PolicyStore(tmp_path)
    with pytest.raises(PolicyUnavailable):
        store.change(lambda p: show(p, "w_2026_42"), who="admin", action="tags.show", detail={})
    with pytest.raises(PolicyError, match="no last good policy"):
        store.repair(empty=False, who="admin")
    assert (tmp_path / "policy.json").read_text() == "{"
    state = store.repair(empty=True, who="admin")
    assert state.ok and store.load() == Policy()
    assert store.audit()[0]["action"] == "policy.repair" and store.audit()[0]["detail"]["restored"] == "empty"


def test_repair_restores_the_last_good_policy_and_refuses_a_good_file(tmp_path):
    store = locked_store(tmp_path)
    with pytest.raises(PolicyError, match="nothing to repair"):
        store.repair(empty=False, who="admin")
    corrupt(tmp_path, "nope")
    assert store.repair(empty=False, who="admin").source == "file"
    assert PolicyStore(tmp_path).load().sessions[0].tag == "w_2026_41"


@pytest.mark.parametrize("fail", ["os.replace", "os.fsync"])
def test_an_interrupted_write_leaves_the_old_file_whole_and_no_partial_file(tmp_path, monkeypatch, fail):
    store = locked_store(tmp_path)
    before = (tmp_path / "policy.json").read_bytes()

    def boom(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fail, boom)
    with pytest.raises(OSError):
        store.change(lambda p: hide(p, "w_2026_42", effective_recommended=None), who="a", action="x", detail={})
    monkeypatch.undo()
    assert (tmp_path / "policy.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["policy-audit.jsonl", "policy.json", "policy.json.last-good",
                                            "policy.json.lock"]
    assert PolicyStore(tmp_path).load().hidden == frozenset()


def test_policy_files_are_written_whole_with_their_modes(tmp_path):
    locked_store(tmp_path)
    assert (tmp_path / "policy.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "policy.json.last-good").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "policy.json.last-good").read_text()) == json.loads(
        (tmp_path / "policy.json").read_text())
