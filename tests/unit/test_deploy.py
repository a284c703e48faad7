from pathlib import Path

from spawner.core.config import StackhubConfig
import pytest

from spawner.deploy.single_host import HostPaths, engine_socket, hub_container
from spawner.deploy.tls import ensure_local_tls


def test_hub_mounts_the_courses_volume_read_write_unless_courses_are_off():
    paths = HostPaths(Path("/x/var"))
    on = hub_container(StackhubConfig(), paths, None)
    assert "stackhub-courses:/srv/stackhub/courses:rw" in on["volumes"]
    off = hub_container(StackhubConfig.model_validate({"courses": {"enabled": False}}), paths, None)
    assert not any("courses" in v for v in off["volumes"])


def test_generated_secrets_are_0600_in_a_0700_directory_and_kept(tmp_path):
    import stat

    from spawner.deploy.single_host import SECRET_NAMES, HostPaths, ensure_secrets

    paths = HostPaths(tmp_path)
    first = {n: p.read_text() for n, p in ensure_secrets(paths).items()}
    assert set(first) == set(SECRET_NAMES)
    for name in SECRET_NAMES:
        assert stat.S_IMODE((paths.secrets / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(paths.secrets.stat().st_mode) == 0o700
    assert {n: p.read_text() for n, p in ensure_secrets(paths).items()} == first  # never regenerated


def test_generated_certificate_names_the_public_host(tmp_path):
    from cryptography import x509

    from spawner.core.config import StackhubConfig
    from spawner.deploy.single_host import HostPaths, tls_files

    cfg = StackhubConfig.model_validate({"hub": {"publicHost": "tutorial.example.org"}})
    files = tls_files(cfg, HostPaths(tmp_path))
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "tutorial.example.org" in names


def test_operator_certificate_is_used_as_given(tmp_path):
    from spawner.core.config import StackhubConfig
    from spawner.deploy.single_host import HostPaths, tls_files

    own = ensure_local_tls(tmp_path / "own", ["localhost", "*.users.localhost"])  # the operator's files
    cfg = StackhubConfig.model_validate({"tls": {"certFile": str(own.cert), "keyFile": str(own.key)}})
    files = tls_files(cfg, HostPaths(tmp_path / "state"))
    assert (files.ca, files.cert, files.key) == (None, own.cert, own.key)
    assert not (tmp_path / "state" / "tls").exists()  # no local CA made


def test_an_operator_certificate_without_the_wildcard_is_refused_in_subdomain_mode(tmp_path):
    from spawner.core.config import StackhubConfig
    from spawner.deploy.single_host import HostPaths, tls_files

    own = ensure_local_tls(tmp_path / "own", ["hub.example.org"])
    tls = {"certFile": str(own.cert), "keyFile": str(own.key)}
    cfg = StackhubConfig.model_validate({"tls": tls, "hub": {"publicHost": "hub.example.org"}})
    with pytest.raises(RuntimeError, match=r"not valid for \*\.hub\.example\.org.*wildcard"):
        tls_files(cfg, HostPaths(tmp_path / "state"))
    # the same certificate serves the shared-origin fallback
    cfg = StackhubConfig.model_validate({"tls": tls, "hub": {"publicHost": "hub.example.org", "subdomains": False}})
    assert tls_files(cfg, HostPaths(tmp_path / "state")).cert == own.cert


def test_the_generated_certificate_holds_the_user_servers_wildcard(tmp_path):
    from spawner.core.config import StackhubConfig
    from spawner.deploy.single_host import HostPaths, tls_files
    from spawner.deploy.tls import certificate_names, covers

    files = tls_files(StackhubConfig(), HostPaths(tmp_path))
    held = certificate_names(files.cert)
    assert covers(held, "localhost") and covers(held, "alice.users.localhost")
    assert not covers(held, "alice.localhost") and not covers(held, "a.b.users.localhost")
    assert "*.localhost" not in held  # browsers refuse it (names.server_domain)


def test_a_secret_from_the_environment_reaches_the_hub_as_a_private_file(tmp_path):
    import stat

    from spawner.hub.auth import client_secret
    from spawner.core.config import StackhubConfig
    from spawner.deploy.single_host import HostPaths, hub_container, secret_environment

    paths = HostPaths(tmp_path)
    env = secret_environment(paths, {"STACKHUB_OAUTH_CLIENT_SECRET": "s3cret-4711"})
    assert env == {"STACKHUB_OAUTH_CLIENT_SECRET_FILE": "/srv/stackhub/secrets/env-stackhub_oauth_client_secret"}
    spec = hub_container(StackhubConfig(), paths, None, env)
    assert "s3cret-4711" not in repr(spec)  # what `docker inspect` would show
    on_host = paths.secrets / "env-stackhub_oauth_client_secret"
    assert stat.S_IMODE(on_host.stat().st_mode) == 0o600
    auth = StackhubConfig.model_validate({"auth": {"type": "github", "clientId": "x", "allowAll": True}}).auth
    # the hub reads it back (here with the host path in place of the container's)
    assert client_secret(auth, {"STACKHUB_OAUTH_CLIENT_SECRET_FILE": str(on_host)}) == "s3cret-4711"


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

    from spawner.deploy.single_host import Deployment

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


def test_hub_state_may_be_a_host_directory_on_its_own_filesystem():
    paths = HostPaths(Path("/x/var"))
    vol = hub_container(StackhubConfig(), paths, None)
    assert "stackhub-hub-state:/srv/stackhub/state:rw" in vol["volumes"]
    cfg = StackhubConfig.model_validate({"hub": {"stateVolume": "/srv/hubstate"}})
    assert "/srv/hubstate:/srv/stackhub/state:rw" in hub_container(cfg, paths, None)["volumes"]


def test_the_hub_gets_the_socket_of_the_engine_the_deployment_is_made_on():
    assert engine_socket(None) == engine_socket("") == "/var/run/docker.sock"
    assert engine_socket("unix:///run/other-engine.sock") == "/run/other-engine.sock"
    spec = hub_container(StackhubConfig(), HostPaths(Path("/x")), None, docker_socket="/run/other-engine.sock")
    assert "/run/other-engine.sock:/var/run/docker.sock:rw" in spec["volumes"]
    for remote in ("tcp://10.0.0.5:2376", "ssh://admin@host", "unix://relative.sock"):
        with pytest.raises(RuntimeError, match="DOCKER_HOST"):
            engine_socket(remote)
