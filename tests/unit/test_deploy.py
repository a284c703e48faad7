from pathlib import Path

from spawner.config import StackhubConfig
from spawner.deploy import HostPaths, hub_container


def test_hub_mounts_the_courses_volume_read_write_unless_courses_are_off():
    paths = HostPaths(Path("/x/var"))
    on = hub_container(StackhubConfig(), paths, None)
    assert "stackhub-courses:/srv/stackhub/courses:rw" in on["volumes"]
    off = hub_container(StackhubConfig.model_validate({"courses": {"enabled": False}}), paths, None)
    assert not any("courses" in v for v in off["volumes"])


def test_hub_state_may_be_a_host_directory_on_its_own_filesystem():
    paths = HostPaths(Path("/x/var"))
    vol = hub_container(StackhubConfig(), paths, None)
    assert "stackhub-hub-state:/srv/stackhub/state:rw" in vol["volumes"]
    cfg = StackhubConfig.model_validate({"hub": {"stateVolume": "/srv/hubstate"}})
    assert "/srv/hubstate:/srv/stackhub/state:rw" in hub_container(cfg, paths, None)["volumes"]
