import pytest

from spawner.core.config import StackhubConfig
from spawner.core.options import (OTHER, OptionsError, Restriction, build_menu, options_from_form,
                             render_form, validate_options)

CFG = StackhubConfig()


def check(options, catalog, **kw):
    return validate_options(options, catalog, CFG.sizes, default_size="small", **kw)


def test_no_options_means_recommended_and_default_size(catalog):
    choice = check({}, catalog)
    assert choice.entry.image == "stackhub/lsst-stack:w_2026_43" and choice.size.name == "small"


def test_named_tag_and_size(catalog):
    choice = check({"image_tag": "v30_0_0", "size": "large"}, catalog)
    assert choice.entry.name == "v30_0_0" and choice.size.memory == "8G"


@pytest.mark.parametrize("options,needle", [
    ({"image_tag": "w_1999_01"}, "allowed: recommended, v30_0_0"),
    ({"image_tag": "../../etc"}, "unknown image_tag"),
    ({"size": "huge"}, "allowed: small, medium, large"),
    ({"image": "evil/image"}, "allowed keys: image_tag, size"),
    ({"image_tag": 3}, "image_tag must be a string; allowed: recommended, v30_0_0, w_2026_43"),
    ({"size": ["small"]}, "size must be a string; allowed: small, medium, large"),
    ([1, 2], "JSON object"),
])
def test_bad_options_name_what_is_allowed(catalog, options, needle):
    with pytest.raises(OptionsError) as e:
        check(options, catalog)
    assert needle in str(e.value)


def test_hidden_tags_are_refused(catalog):
    with pytest.raises(OptionsError):
        check({"image_tag": "w_2026_42"}, catalog, restriction=Restriction(hidden=frozenset({"w_2026_42"})))


def test_session_lock_allows_only_its_tag_and_names_the_session(catalog):
    lock = Restriction(only="w_2026_41", reason="session 'DM tutorial'")
    assert check({}, catalog, restriction=lock).entry.name == "w_2026_41"
    with pytest.raises(OptionsError, match="DM tutorial"):
        check({"image_tag": "v30_0_0"}, catalog, restriction=lock)


def test_form_fields_become_user_options():
    assert options_from_form({"image_tag": ["v30_0_0"], "size": ["small"]}) == {"image_tag": "v30_0_0", "size": "small"}
    assert options_from_form({"image_tag": [OTHER], "image_tag_other": ["w_2026_39"]}) == {"image_tag": "w_2026_39"}


def test_menu_groups_like_the_science_platform(catalog):
    menu = build_menu(catalog, weeklies=3)
    assert menu.recommended.name == "w_2026_43"
    groups = {title: [e.name for e in entries] for title, entries in menu.groups}
    assert groups == {"Releases": ["v30_0_0"], "Weeklies": ["w_2026_43", "w_2026_42", "w_2026_41"],
                      "Dailies": ["d_2026_11_25"]}
    assert [e.name for e in menu.others] == ["w_2026_40", "w_2026_39", "w_2026_30"]
    assert not menu.others[-1].present


def test_form_is_escaped_and_marks_remote_tags(catalog):
    html = render_form(build_menu(catalog), CFG.sizes, "small")
    assert 'value="recommended" checked' in html
    assert "(older, slower to start)" in html
    assert 'data-class="weekly"' in html and 'data-class="release"' in html
    from spawner.core.config import Size
    evil = render_form(build_menu(catalog), [Size(name="x", cpu=1, memory="1G", description="<script>")], "x")
    assert "<script>" not in evil and "&lt;script&gt;" in evil


def test_locked_form_shows_only_the_session_tag(catalog):
    html = render_form(build_menu(catalog, Restriction(only="w_2026_41", reason="session 'DM'")), CFG.sizes, "small")
    assert 'name="image_tag" value="w_2026_41"' in html and "v30_0_0" not in html


def test_a_users_servers_together_stay_within_the_total_size():
    from spawner.core.options import check_user_total

    small, medium, large = StackhubConfig().sizes
    limits = {"total_cpu": 4, "total_memory": "8G"}
    check_user_total(large, [], **limits)
    check_user_total(small, [small, medium], **limits)
    with pytest.raises(OptionsError, match=r"8 cores \(hub.namedServers.totalCpu is 4\).*sizes: large"):
        check_user_total(large, [large], **limits)
    with pytest.raises(OptionsError, match=r"10G of memory \(hub.namedServers.totalMemory is 8G\)"):
        check_user_total(medium, [small, medium], total_cpu=None, total_memory="8G")
    check_user_total(large, [large, large], total_cpu=None, total_memory=None)


def test_the_spawner_counts_the_users_other_running_servers_sizes():
    from types import SimpleNamespace

    from spawner.backends.docker.spawner import LSSTDockerSpawner

    sp = LSSTDockerSpawner()
    other = {"a": SimpleNamespace(active=True, user_options={"size": "medium"}),
             "b": SimpleNamespace(active=True, user_options={}),  # the default size
             "c": SimpleNamespace(active=False, user_options={"size": "large"})}
    sp.user = SimpleNamespace(name="ann", spawners={"": sp, **other})
    assert [s.name for s in sp.other_servers_sizes()] == ["medium", "small"]
