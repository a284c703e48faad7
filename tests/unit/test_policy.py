"""The run-time tag policy: evaluation (pure), changes, the file store and the spawner adapter."""

import datetime as dt
import json
import os
from types import SimpleNamespace

import pytest

from spawner.config import StackhubConfig
from spawner.options import OptionsError, Restriction, allowed_tags, build_menu, render_form, validate_options
from spawner.policy import (Policy, PolicyError, Session, close_session, hide, open_session, parse_time,
                            recommend, restriction, session_for, show)
from spawner.policy_store import HubPolicy, PolicyStore

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


async def test_unreadable_policy_file_means_no_policy(tmp_path):
    (tmp_path / "policy.json").write_text("{not json")
    hp = HubPolicy(PolicyStore(tmp_path))
    assert await hp.restriction_for(SimpleNamespace(name="a", admin=False, groups=[])) == Restriction()
