import pytest

from spawner.core.tags import TagClass, TagError, parse_tag, sort_tags


@pytest.mark.parametrize("name,cls", [
    ("w_2026_43", TagClass.WEEKLY), ("v30_0_0", TagClass.RELEASE), ("v30_0_0_rc1", TagClass.RELEASE),
    ("d_2026_11_26", TagClass.DAILY), ("exp_w_2026_43_ticket", TagClass.EXPERIMENTAL),
    ("recommended", TagClass.ALIAS),
])
def test_tag_classes(name, cls):
    assert parse_tag(name).tag_class is cls


@pytest.mark.parametrize("bad", ["", "w 2026", "../etc", "a/b", "x" * 200, ":latest"])
def test_names_docker_refuses_are_not_tags(bad):
    with pytest.raises(TagError):
        parse_tag(bad)


def test_menu_order_is_class_then_newest_first():
    names = ["w_2026_41", "v29_2_1", "w_2026_43", "recommended", "d_2026_11_26", "v30_0_0", "v30_0_0_rc1", "d_2026_11_25"]
    assert [t.name for t in sort_tags(names)] == [
        "recommended", "v30_0_0", "v30_0_0_rc1", "v29_2_1", "w_2026_43", "w_2026_41", "d_2026_11_26", "d_2026_11_25"]
