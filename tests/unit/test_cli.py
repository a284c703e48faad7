"""The operator commands that need no engine: `stackhub check` and `stackhub schema`."""

import json

from spawner.cli.main import main


def test_check_accepts_a_valid_file_and_names_backend_and_auth(tmp_path, capsys):
    f = tmp_path / "stackhub.yaml"
    f.write_text("hub: {publicHost: hub.example.org}\n")
    assert main(["check", str(f)]) == 0
    assert capsys.readouterr().out.strip() == f"{f}: valid; backend docker, auth shared-password"


def test_check_refuses_an_unknown_key_naming_file_and_key(tmp_path, capsys):
    f = tmp_path / "stackhub.yaml"
    f.write_text("hub: {httpsPrt: 1}\n")
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "hub.httpsPrt" in err


def test_schema_is_the_config_models_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert {"hub", "auth", "sizes", "spawner", "volumes"} <= set(schema["properties"])
    hub = schema["$defs"]["HubSettings"]
    assert "publicHost" in hub["properties"] and hub["additionalProperties"] is False


def test_up_with_backend_swarm_hands_the_hub_the_same_config_with_that_backend(tmp_path, monkeypatch):
    import yaml

    from spawner.cli.main import with_backend
    from spawner.core.config import load_config
    from spawner.deploy.single_host import HostPaths

    f = tmp_path / "stackhub.yaml"
    f.write_text("hub: {prefix: site, httpsPort: 12443}\n")
    monkeypatch.setenv("STACKHUB_CONFIG", str(f))
    paths = HostPaths(tmp_path / "var")
    cfg, config = with_backend(load_config(), "swarm", paths)
    assert cfg.spawner.backend.type == "swarm" and cfg.hub.prefix == "site"
    assert config == paths.root / "stackhub.effective.yaml" and oct(config.stat().st_mode & 0o777) == "0o600"
    assert load_config(config) == cfg  # the hub reads exactly what the CLI deploys
    assert yaml.safe_load(config.read_text())["hub"] == {"prefix": "site", "httpsPort": 12443}
    same, path = with_backend(load_config(), None, paths)
    assert same.spawner.backend.type == "docker" and path == f


def test_up_refuses_a_backend_it_does_not_run(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["up", "--backend", "kubernetes"])
    assert "invalid choice: 'kubernetes'" in capsys.readouterr().err
