import json

from traitlets.config import Config

from spawner.core.config import StackhubConfig
from spawner.hub.apply import HubPaths, apply_config


def paths(tmp_path):
    for name in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (tmp_path / name).write_text(f"{name}-value-0123456789abcdef0123456789abcdef\n")
    return HubPaths(state=tmp_path, secrets=tmp_path)


def test_apply_sets_spawner_proxy_auth_and_culler(tmp_path):
    c = apply_config(Config(), StackhubConfig(), paths(tmp_path))
    assert c.JupyterHub.spawner_class == "spawner.backends.docker.spawner.LSSTDockerSpawner"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.authenticator_class == "spawner.hub.tutorial_auth.TutorialAuthenticator"
    assert c.TutorialAuthenticator.room_code.startswith("shared-password-value")
    assert c.TutorialAuthenticator.admin_password.startswith("admin-password-value")
    assert c.TutorialAuthenticator.dbm_path == str(tmp_path / "tutorial-passwords")
    assert "room code" in c.JupyterHub.template_vars["announcement_login"]
    assert {s["name"] for s in c.JupyterHub.services} == {"stackhub-admin", "stackhub-sessions", "idle-culler",
                                                           "stackhub-courses", "stackhub-diskwatch", "stackhub-orphans"}
    assert c.JupyterHub.public_url == "https://localhost:8443/"
    assert "Strict-Transport-Security" in c.JupyterHub.tornado_settings["headers"]


def test_culler_can_be_turned_off(tmp_path):
    cfg = StackhubConfig.model_validate({"culler": {"enabled": False}, "courses": {"enabled": False},
                                         "volumes": {"homeBudget": None}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    assert [s["name"] for s in c.JupyterHub.services] == ["stackhub-admin", "stackhub-sessions", "stackhub-orphans"]


def test_instructors_and_admins_reach_the_course_service(tmp_path):
    c = apply_config(Config(), StackhubConfig(), paths(tmp_path))
    service = next(s for s in c.JupyterHub.services if s["name"] == "stackhub-courses")
    assert service["url"] == "http://stackhub-hub:10102" and service["oauth_no_confirm"]
    assert service["command"][1:] == ["-m", "spawner.services.courses"]  # no settings as flags
    handed = service["environment"]["STACKHUB_CONFIG_JSON"]
    assert json.loads(handed)["courses"]["mountPath"] == "/opt/stackhub/courses"
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "course-instructors")
    assert role["groups"] == ["instructors"] and role["scopes"] == ["access:services!service=stackhub-courses"]


def test_every_spawner_gets_the_config_as_data_and_shares_one_policy_reader(tmp_path):
    """The model reaches spawners as plain JSON data (copied like any config value, no tricks);
    the policy reader with its lock and cache is one per hub process."""
    from spawner.backends.docker.spawner import LSSTDockerSpawner

    cfg = StackhubConfig.model_validate({"hub": {"prefix": "tut"}, "stack": {"defaultSize": "medium"}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    a, b = LSSTDockerSpawner(config=c), LSSTDockerSpawner(config=c)
    assert a.cfg == b.cfg == cfg and a.cfg.hub.prefix == "tut"
    assert a.policy is b.policy and a.policy.store.dir == tmp_path


def test_named_servers_are_capped_per_user_by_jupyterhubs_own_limit(tmp_path):
    c = apply_config(Config(), StackhubConfig(), paths(tmp_path))
    assert c.JupyterHub.allow_named_servers is True and c.JupyterHub.named_server_limit_per_user == 3
    cfg = StackhubConfig.model_validate({"hub": {"namedServers": {"limit": 1}}})
    assert apply_config(Config(), cfg, paths(tmp_path)).JupyterHub.named_server_limit_per_user == 1


def test_the_hub_logs_policy_problems_in_its_own_log(tmp_path):
    from spawner.backends.docker.spawner import LSSTDockerSpawner

    c = apply_config(Config(), StackhubConfig(), paths(tmp_path))
    assert LSSTDockerSpawner(config=c).policy.store.log.name == "JupyterHub"


def test_the_disk_watcher_may_only_see_and_stop_servers(tmp_path):
    cfg = StackhubConfig.model_validate({"volumes": {"homeBudget": "20M", "homeBudgetCheckSeconds": 2,
                                                     "homeBudgetGraceSeconds": 90}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    service = next(s for s in c.JupyterHub.services if s["name"] == "stackhub-diskwatch")
    assert service["command"][1:] == ["-m", "spawner.services.diskwatch"]
    assert service["environment"]["STACKHUB_HUB_STATE"] == str(tmp_path)
    assert "url" not in service and "api_token" not in service  # no port, a token of its own from the hub
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "stackhub-diskwatch")
    assert role["scopes"] == ["list:users", "read:servers", "delete:servers"]
    assert role["services"] == ["stackhub-diskwatch"]
    from spawner.backends.docker.spawner import LSSTDockerSpawner

    assert LSSTDockerSpawner(config=c).disk_notices.path == tmp_path / "disk-budget.json"


def test_every_service_gets_the_hubs_config_by_one_route(tmp_path, monkeypatch):
    """Serialised once by apply_config, read back whole by each service: the same model."""
    from spawner.core.config import config_from_env

    cfg = StackhubConfig.model_validate({"hub": {"prefix": "tut", "httpsPort": 9999},
                                         "volumes": {"homeBudget": "1G"}, "courses": {"maxFiles": 7}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    envs = [s["environment"] for s in c.JupyterHub.services if "command" in s and "spawner.services" in " ".join(s["command"])]
    assert len(envs) == 4  # sessions, courses, disk watcher, orphans
    assert len({e["STACKHUB_CONFIG_JSON"] for e in envs}) == 1
    for env in envs:
        assert config_from_env(env) == cfg
        assert not any(a.startswith("--") for s in c.JupyterHub.services for a in s.get("command", [])
                       if "spawner.services" in " ".join(s.get("command", [])))


def test_the_steps_only_set_traits_secrets_are_read_before_any_step_runs(tmp_path):
    """Given the inputs, apply_config touches no file: the secrets directory need not exist."""
    from spawner.hub.apply import HubInputs, read_inputs

    nowhere = HubPaths(state=tmp_path / "state", secrets=tmp_path / "missing")
    inputs = HubInputs(secrets={"proxy-token": "p", "admin-token": "a", "shared-password": "room",
                                "admin-password": "adm"})
    c = apply_config(Config(), StackhubConfig(), nowhere, inputs)
    assert c.TutorialAuthenticator.room_code == "room" and c.ConfigurableHTTPProxy.auth_token == "p"
    assert "room" not in repr(inputs) and "adm" not in repr(inputs)
    # reading them is where a missing secret stops the hub, naming the file
    import pytest

    with pytest.raises(SystemExit, match="missing/proxy-token"):
        read_inputs(StackhubConfig(), nowhere)


def test_an_external_database_url_comes_from_the_environment_never_the_config(tmp_path, monkeypatch):
    """The Helm chart's hubDatabase.type external: STACKHUB_DB_URL from a Secret."""
    from traitlets.config import Config

    from spawner.core.config import StackhubConfig
    from spawner.hub.apply import DB_URL_ENV, HubPaths, apply_config

    paths = HubPaths(state=tmp_path, secrets=tmp_path)
    for name in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (tmp_path / name).write_text("x\n")
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    assert apply_config(Config(), StackhubConfig(), paths).JupyterHub.db_url.startswith("sqlite:///")
    monkeypatch.setenv(DB_URL_ENV, "postgresql://hub:pw@db/hub")
    assert apply_config(Config(), StackhubConfig(), paths).JupyterHub.db_url == "postgresql://hub:pw@db/hub"


def gateway_config(namespace=None, **gateway):
    return StackhubConfig.model_validate({
        "hub": {"prefix": "tut"},
        "spawner": {"backend": {"type": "kubernetes", "namespace": namespace,
                                "daskGateway": {"enabled": True, **gateway}}}})


def test_dask_gateway_is_a_hub_service_that_servers_tokens_may_use(tmp_path):
    """As daskhub: the gateway is the service `dask-gateway` behind its Traefik, with its own token,
    and users' server tokens carry access to it (the gateway checks that scope)."""
    p = paths(tmp_path)
    (tmp_path / "dask-gateway-token").write_text("gateway-token-0123456789abcdef\n")
    c = apply_config(Config(), gateway_config(), p)
    (gw,) = [s for s in c.JupyterHub.services if s["name"] == "dask-gateway"]
    assert gw["api_token"] == "gateway-token-0123456789abcdef"
    assert gw["url"] == "http://tut-dask-gateway-traefik:80"
    # the chart's Traefik runs in the users' namespace (spawner.backend.namespace)
    (gw,) = [s for s in apply_config(Config(), gateway_config("tut-users"), p).JupyterHub.services
             if s["name"] == "dask-gateway"]
    assert gw["url"] == "http://tut-dask-gateway-traefik.tut-users.svc:80"
    access = "access:services!service=dask-gateway"
    (users,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert users["scopes"] == ["self", access]
    assert access in c.Spawner.server_token_scopes and "access:servers!server" in c.Spawner.server_token_scopes


def test_without_the_gateway_no_service_no_token_no_extra_scopes(tmp_path):
    cfg = StackhubConfig.model_validate({"spawner": {"backend": {"type": "kubernetes"}}})
    c = apply_config(Config(), cfg, paths(tmp_path))  # no dask-gateway-token file: not needed
    assert "dask-gateway" not in {s["name"] for s in c.JupyterHub.services}
    assert "user" not in {r["name"] for r in c.JupyterHub.load_roles}
    assert "server_token_scopes" not in c.Spawner


def test_the_gateway_token_is_a_required_secret_when_enabled(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="dask-gateway-token"):
        apply_config(Config(), gateway_config(), paths(tmp_path))


def test_gateway_settings_are_checked():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="workerCores 3 is above maxWorkerCores 2"):
        gateway_config(workerCores=3)
    with pytest.raises(ValidationError, match="maxMemory"):
        gateway_config(maxMemory="lots")
    with pytest.raises(ValidationError, match="workerMemory 8G is above maxWorkerMemory 4G"):
        gateway_config(workerMemory="8G")
