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


def test_users_take_over_and_release_call_the_hubs_account_api(monkeypatch, capsys):
    from types import SimpleNamespace

    from spawner.cli import ops
    from spawner.cli.client import ApiError

    calls = []

    def api(method, path, body=None):
        calls.append((method, path, body))
        if path.endswith("/release") and "ghost" in path:
            raise ApiError("POST stackhub/users/ghost/release: 404 Not Found")
        if path.endswith("/release"):
            return {"name": "ada", "released": True}
        return {"name": "ada", "instructor": body["instructor"], "admin": body["admin"], "stopped": ["(default)"], "tokens": 3}

    monkeypatch.setattr(ops, "client", lambda service=None: api)
    assert ops.cmd_take_over(SimpleNamespace(user="ada", admin=False, instructor=False)) == 0
    assert calls[-1] == ("POST", "stackhub/users/ada/take-over", {"instructor": True, "admin": False})
    assert "took over ada as instructor" in capsys.readouterr().out
    ops.cmd_take_over(SimpleNamespace(user="ada", admin=True, instructor=False))
    assert calls[-1][2] == {"instructor": False, "admin": True}
    ops.release_name(api, "ada")
    assert "may be claimed again" in capsys.readouterr().out
    ops.release_name(api, "ghost")  # an OAuth hub has no such API: nothing to release
