import pytest

from spawner.config import ConfigError, StackhubConfig, json_schema, load_config


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
