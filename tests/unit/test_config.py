import re

import pytest

from spawner.core.config import ConfigError, StackhubConfig, json_schema, load_config


def test_defaults_need_no_file(monkeypatch):
    monkeypatch.delenv("STACKHUB_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.hub.https_port == 8443 and cfg.hub.http_port == 8080
    assert cfg.auth.type == "shared-password"
    assert [s.name for s in cfg.sizes] == ["small", "medium", "large"]
    assert cfg.volumes.data[0].target == "/data" and cfg.volumes.data[0].read_only


def test_yaml_uses_camel_case_keys(tmp_path):
    f = tmp_path / "stackhub.yaml"
    f.write_text("hub:\n  httpsPort: 9443\n  adminUsers: [boss]\nstack:\n  recommended: v30_0_0\n")
    cfg = load_config(f)
    assert cfg.hub.https_port == 9443 and cfg.hub.admin_users == ["boss"]
    assert cfg.stack.recommended == "v30_0_0"


@pytest.mark.parametrize("text,needle", [
    ("hub:\n  httpsPrt: 9443\n", "hub.httpsPrt"),
    ("hub:\n  httpsPort: lots\n", "hub.httpsPort"),
    ("stack:\n  defaultSize: huge\n", "defaultSize"),
    ("auth:\n  type: oidc\n  clientId: x\n", "issuer"),
    ("sizes:\n  - {name: s, cpu: 1, memory: lots}\n", "memory"),
    ("[1, 2]\n", "mapping"),
    ("hub: [\n", "YAML"),
])
def test_bad_config_names_the_file_and_the_key(tmp_path, text, needle):
    f = tmp_path / "stackhub.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(f) in str(e.value) and needle in str(e.value)


def test_schema_forbids_unknown_keys():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert "httpsPort" in schema["$defs"]["HubSettings"]["properties"]


# --- sizes against the host's capacity -------------------------------------------------------------

from spawner.core.config import HostCapacity, fit_sizes_to_host, memory_bytes  # noqa: E402

GIB = 1024**3
TWO_CORES = HostCapacity(cpus=2, memory=24 * GIB)


@pytest.mark.parametrize("value,expected", [("512M", 512 * 1024**2), ("2G", 2 * GIB), ("1.5G", int(1.5 * GIB)),
                                            ("1T", 1024 * GIB), ("1000", 1000), ("64K", 65536)])
def test_memory_is_read_as_docker_reads_it(value, expected):
    assert memory_bytes(value) == expected


def test_a_configured_size_larger_than_the_host_is_refused_naming_it_and_the_host(tmp_path):
    f = tmp_path / "stackhub.yaml"
    f.write_text("sizes:\n  - {name: small, cpu: 1, memory: 2G}\n  - {name: huge, cpu: 8, memory: 2G}\n"
                 "  - {name: fat, cpu: 1, memory: 64G}\n")
    with pytest.raises(ConfigError) as e:
        fit_sizes_to_host(load_config(f), TWO_CORES)
    message = str(e.value)
    assert "'huge' (cpu 8 > 2 cores)" in message and "'fat' (memory 64G > 24.0 GiB)" in message
    assert "2 cores and 24.0 GiB" in message and "'small'" not in message


def test_a_size_equal_to_the_host_fits(tmp_path):
    f = tmp_path / "stackhub.yaml"
    f.write_text("sizes:\n  - {name: small, cpu: 2, memory: 24G}\n")
    cfg, dropped = fit_sizes_to_host(load_config(f), TWO_CORES)
    assert dropped == [] and [s.name for s in cfg.sizes] == ["small"]


def test_default_sizes_larger_than_the_host_are_dropped_not_fatal():
    cfg, dropped = fit_sizes_to_host(StackhubConfig(), TWO_CORES)
    assert [s.name for s in cfg.sizes] == ["small", "medium"]
    assert dropped == ["size 'large' (cpu 4 > 2 cores)"]
    assert fit_sizes_to_host(StackhubConfig(), HostCapacity(cpus=64, memory=256 * GIB))[0].sizes == StackhubConfig().sizes


def test_a_host_too_small_for_the_default_size_is_refused():
    with pytest.raises(ConfigError, match="default size 'small'"):
        fit_sizes_to_host(StackhubConfig(), HostCapacity(cpus=1, memory=1 * GIB))


def test_the_engine_edge_reads_ncpu_and_memtotal_and_skips_other_backends():
    from spawner.backends.docker.host import engine_capacity, fit_to_engine

    class Engine:
        def info(self):
            return {"NCPU": 2, "MemTotal": 24 * GIB}

    assert engine_capacity(Engine()) == TWO_CORES
    assert [s.name for s in fit_to_engine(StackhubConfig(), Engine()).sizes] == ["small", "medium"]
    k8s = StackhubConfig.model_validate({"spawner": {"backend": "kubernetes"}})
    assert fit_to_engine(k8s, Engine()) is k8s


def test_course_source_rules_and_limits_have_safe_defaults_and_camel_case_keys(tmp_path):
    c = StackhubConfig().courses
    assert c.git_schemes == ["https"] and c.git_allowed_hosts == [] and c.max_files > 0 and c.sync_seconds > 0
    f = tmp_path / "s.yaml"
    f.write_text("courses:\n  gitSchemes: [https, ssh]\n  gitAllowedHosts: [gitlab.internal, 10.20.0.0/16]\n"
                 "  maxFiles: 100\n  maxCloneMb: 50\n  syncSeconds: 5\n  execTimeout: 3\n")
    c = load_config(f).courses
    assert c.git_schemes == ["https", "ssh"] and c.git_allowed_hosts == ["gitlab.internal", "10.20.0.0/16"]
    assert (c.max_files, c.max_clone_mb, c.sync_seconds, c.exec_timeout) == (100, 50, 5, 3)
    f.write_text("courses:\n  gitSchemes: [file]\n")
    with pytest.raises(ConfigError, match="courses.gitSchemes"):
        load_config(f)


def test_an_unknown_backend_is_refused_naming_the_three(tmp_path):
    f = tmp_path / "stackhub.yaml"
    f.write_text("spawner: {backend: nomad}\n")
    with pytest.raises(ConfigError, match="spawner.backend") as e:
        load_config(f)
    assert all(name in str(e.value) for name in ("docker", "swarm", "kubernetes"))


def test_the_kubernetes_backend_loads_with_its_own_keys(tmp_path):
    f = tmp_path / "stackhub.yaml"
    f.write_text("spawner:\n  backend:\n    type: kubernetes\n    guaranteeFraction: 0.5\n"
                 "    homes: {type: shared, sharedClaim: homes-rwx, initChown: false}\n")
    kube = load_config(f).spawner.backend
    assert (kube.type, kube.namespace, kube.guarantee_fraction) == ("kubernetes", None, 0.5)
    assert (kube.homes.type, kube.homes.shared_claim, kube.homes.init_chown) == ("shared", "homes-rwx", False)
    f.write_text("spawner:\n  backend:\n    type: kubernetes\n    homes: {capacity: lots}\n")
    with pytest.raises(ConfigError, match="spawner.backend.kubernetes.homes.capacity"):
        load_config(f)
    f.write_text("spawner:\n  backend:\n    type: kubernetes\n    workers: 4\n")  # Docker's key
    with pytest.raises(ConfigError, match="workers"):
        load_config(f)


def test_swarm_backend_keys_load_with_defaults_and_are_checked(tmp_path):
    from spawner.core.config import SwarmBackend

    f = tmp_path / "stackhub.yaml"
    f.write_text("spawner: {backend: swarm}\n")
    b = load_config(f).spawner.backend
    assert b == SwarmBackend() and b.home_volume_driver.name == "local" and b.home_volume_driver.options == {}
    assert b.shared_volume_driver is None and b.constraints == [] and 0 <= b.reservation <= 1
    f.write_text("spawner:\n  backend:\n    type: swarm\n    homeVolumeDriver:\n      name: local\n"
                 "      options: {type: nfs, o: 'addr=10.0.0.5,rw', device: ':/export/homes/{user}'}\n"
                 "    constraints: ['node.labels.stackhub == users']\n    sizeConstraints: {large: ['node.labels.big==true']}\n"
                 "    reservation: 0.5\n")
    b = load_config(f).spawner.backend
    assert b.home_volume_driver.options["device"] == ":/export/homes/{user}"
    assert b.size_constraints == {"large": ["node.labels.big==true"]} and b.reservation == 0.5


@pytest.mark.parametrize("backend, needle", [
    ("{type: swarm, homeVolumeDriver: {options: {device: ':/x/{home}'}}}", "{home} is not a placeholder"),
    ("{type: swarm, homeVolumeDriver: {options: {'a b': x}}}", "option name 'a b'"),
    ("{type: swarm, constraints: ['node.role']}", "not a Swarm placement constraint"),
    ("{type: swarm, constraints: ['x==1; rm']}", "not a Swarm placement constraint"),
    ("{type: swarm, sizeConstraints: {huge: ['node.role==worker']}}", "sizes that do not exist: huge"),
    ("{type: swarm, reservation: 2}", "spawner.backend.swarm.reservation"),
    ("{type: swarm, namespace: x}", "spawner.backend.swarm.namespace"),
])
def test_bad_swarm_keys_are_refused_naming_the_key(tmp_path, backend, needle):
    f = tmp_path / "stackhub.yaml"
    f.write_text(f"spawner: {{backend: {backend}}}\n")
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(f)


def test_backend_is_a_typed_variant_with_its_own_keys(tmp_path):
    from spawner.core.config import DockerBackend

    assert StackhubConfig().spawner.backend == DockerBackend(workers=16, starting=16)
    f = tmp_path / "stackhub.yaml"
    f.write_text("spawner: {backend: {type: docker, workers: 4}}\n")
    assert load_config(f).spawner.backend.workers == 4
    f.write_text("spawner: {backend: docker}\n")  # a bare name
    assert load_config(f).spawner.backend.type == "docker"
    f.write_text("spawner: {backend: {type: docker, namespace: x}}\n")  # a Kubernetes key on Docker
    with pytest.raises(ConfigError, match="spawner.backend.docker.namespace"):
        load_config(f)


def test_logs_are_bounded_by_default_and_engine_leaves_them_to_the_daemon(tmp_path):
    from spawner.core.specs import container_log_config, log_limit

    cfg = StackhubConfig()
    assert container_log_config(log_limit(cfg)) == {
        "log_config": {"type": "json-file", "config": {"max-size": "10M", "max-file": "3"}}}
    f = tmp_path / "stackhub.yaml"
    f.write_text("logs: {driver: local, maxSize: 5M, maxFiles: 2}\n")
    assert log_limit(load_config(f)).options == {"max-size": "5M", "max-file": "2"}
    f.write_text("logs: {driver: engine}\n")
    assert container_log_config(log_limit(load_config(f))) == {}
    for bad, needle in (("{maxSize: 1K}", "at least 64K"), ("{maxSize: lots}", "512M"), ("{maxFiles: 0}", "maxFiles"),
                        ("{driver: syslog}", "driver")):
        f.write_text(f"logs: {bad}\n")
        with pytest.raises(ConfigError, match=needle):
            load_config(f)
