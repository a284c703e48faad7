from pathlib import Path

from spawner.config import StackhubConfig
from spawner.deploy import HostPaths, hub_container


def test_hub_mounts_the_courses_volume_read_write_unless_courses_are_off():
    paths = HostPaths(Path("/x/var"))
    on = hub_container(StackhubConfig(), paths, None)
    assert "stackhub-courses:/srv/stackhub/courses:rw" in on["volumes"]
    off = hub_container(StackhubConfig.model_validate({"courses": {"enabled": False}}), paths, None)
    assert not any("courses" in v for v in off["volumes"])


class _Net:
    def __init__(self, name, attrs, containers=()):
        self.name, self.attrs, self.containers, self.removed = name, attrs, list(containers), False

    def reload(self):
        pass

    def remove(self):
        self.removed = True


class _Networks:
    def __init__(self, nets):
        self.nets, self.created = nets, []

    def list(self, names):
        return [n for n in self.nets if names[0] in n.name]  # the engine matches parts of names

    def create(self, **kw):
        self.created.append(kw)
        subnet = (kw.get("ipam") or {}).get("Config", [{}])[0].get("Subnet") or "172.30.0.0/16"
        return _Net(kw["name"], {"IPAM": {"Config": [{"Subnet": subnet}]}})


def _deployment(nets):
    from types import SimpleNamespace

    from spawner.deploy import Deployment

    client = SimpleNamespace(networks=_Networks(nets))
    return Deployment(client=client, cfg=StackhubConfig(), paths=HostPaths(Path("/x")), config_file=None,
                      log=lambda m: None), client


def test_networks_are_created_and_an_old_users_network_is_made_again_when_free():
    import types

    dep, client = _deployment([_Net("stackhub-users-old", {}), _Net("stackhub", {})])
    dep._ensure_networks()
    # the users network twice: Docker picks a free subnet, then it is made with that subnet given
    assert [(c["name"], c["internal"], c["options"]) for c in client.networks.created] == [
        ("stackhub-users", False, {"com.docker.network.bridge.enable_icc": "false"}),
        ("stackhub-users", False, {"com.docker.network.bridge.enable_icc": "false"}),
        ("stackhub-internal", True, {}),
    ]
    assert client.networks.created[1]["ipam"]["Config"] == [
        {"Subnet": "172.30.0.0/16", "Gateway": "172.30.0.1", "IPRange": "172.30.128.0/17", "AuxiliaryAddresses": None}]
    old = _Net("stackhub-users", {"Internal": False, "Options": {"com.docker.network.bridge.enable_icc": "false"},
                                  "IPAM": {"Config": [{"Subnet": "172.30.0.0/16"}]}})
    dep, client = _deployment([old, _Net("stackhub-internal", {"Internal": True})])
    dep._ensure_networks()
    assert old.removed and [c["name"] for c in client.networks.created] == ["stackhub-users"] * 2
    busy = _Net("stackhub-users", {"Internal": False, "Options": {}}, [types.SimpleNamespace(name="stackhub-ann")])
    dep, client = _deployment([busy])
    try:
        dep._ensure_networks()
    except RuntimeError as e:
        assert "stackhub-ann" in str(e) and "make down" in str(e)
    else:
        raise AssertionError("a users network in use with icc on must stop `up`")
    assert not busy.removed
