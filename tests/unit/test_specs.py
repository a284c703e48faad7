from dataclasses import asdict

from spawner.core.config import StackhubConfig
from spawner.core.options import validate_options
from spawner.core.specs import build_server_spec


def test_server_spec_golden(catalog, golden):
    cfg = StackhubConfig()
    choice = validate_options({"image_tag": "v30_0_0", "size": "medium"}, catalog, cfg.sizes, default_size="small")
    golden("server_spec_jurgen_named", asdict(build_server_spec(cfg, "Jürgen.M", "big-run", choice)))


def test_home_is_shared_by_named_servers_and_data_is_read_only(catalog):
    cfg = StackhubConfig()
    choice = validate_options({}, catalog, cfg.sizes, default_size="small")
    a = build_server_spec(cfg, "ann", "", choice)
    b = build_server_spec(cfg, "ann", "two", choice)
    assert a.home_volume == b.home_volume and a.name != b.name
    home, data, courses = a.mounts
    assert (home.target, home.read_only) == ("/home", False)
    assert (data.target, data.read_only, data.type) == ("/data", True, "volume")
    assert (courses.source, courses.target, courses.read_only) == ("stackhub-courses", "/opt/stackhub/courses", True)
    assert a.environment["HOME"] == "/home/ann"


def test_courses_can_be_turned_off_or_kept_from_start(catalog):
    choice = validate_options({}, catalog, StackhubConfig().sizes, default_size="small")
    off = build_server_spec(StackhubConfig.model_validate({"courses": {"enabled": False}}), "ann", "", choice)
    assert [m.target for m in off.mounts] == ["/home", "/data"] and "STACKHUB_COURSES" not in off.environment
    lazy = build_server_spec(StackhubConfig.model_validate({"courses": {"syncOnSpawn": False}}), "ann", "", choice)
    assert lazy.environment["STACKHUB_COURSE_SYNC_ON_START"] == "0"
