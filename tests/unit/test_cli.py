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
