import json
from pathlib import Path

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


def test_by_default_each_user_server_has_its_own_origin_and_the_proxy_routes_by_host(tmp_path):
    from pathlib import Path

    from spawner.deploy.single_host import HostPaths, proxy_container
    from spawner.deploy.tls import TLSFiles

    c = apply_config(Config(), StackhubConfig(), paths(tmp_path))
    assert c.JupyterHub.subdomain_host == "https://localhost:8443"
    assert c.JupyterHub.cookie_host_prefix_enabled is True
    hook = c.JupyterHub.subdomain_hook
    assert hook("alice", "localhost", "user") == "alice.users.localhost"
    assert hook("Ann.Lee", "localhost", "user") != hook("ann.lee", "localhost", "user")
    # stackhub's own pages stay at /services/NAME/ on the hub's origin; a foreign one gets its own
    assert hook("stackhub-sessions", "localhost", "service") == "localhost"
    assert hook("stackhub-courses", "localhost", "service") == "localhost"
    assert hook("dask-gateway", "localhost", "service") == "dask-gateway--service.users.localhost"
    chp = proxy_container(StackhubConfig(), HostPaths(Path("/x")), TLSFiles(None, Path("/c"), Path("/k")))
    assert "--host-routing" in chp["command"][-1]


def test_a_named_public_host_puts_users_right_under_it():
    cfg = StackhubConfig.model_validate({"hub": {"publicHost": "hub.example.org"}})
    assert cfg.hub.user_domain == "hub.example.org"
    cfg = StackhubConfig.model_validate({"hub": {"publicHost": "hub.example.org", "serverDomain": "u.example.org"}})
    assert cfg.hub.user_domain == "u.example.org"


def test_the_shared_origin_fallback_sets_no_subdomains(tmp_path):
    from pathlib import Path

    from spawner.deploy.single_host import HostPaths, proxy_container
    from spawner.deploy.tls import TLSFiles

    cfg = StackhubConfig.model_validate({"hub": {"subdomains": False}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    assert "subdomain_host" not in c.JupyterHub and "cookie_host_prefix_enabled" not in c.JupyterHub
    chp = proxy_container(cfg, HostPaths(Path("/x")), TLSFiles(None, Path("/c"), Path("/k")))
    assert "--host-routing" not in chp["command"][-1]


def test_subdomains_need_a_host_name_not_an_address():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="hub.subdomains needs a DNS name"):
        StackhubConfig.model_validate({"hub": {"publicHost": "192.0.2.10"}})
    StackhubConfig.model_validate({"hub": {"publicHost": "192.0.2.10", "subdomains": False}})


def test_on_the_shared_origin_no_admin_role_opens_other_users_servers(tmp_path):
    from jupyterhub.roles import get_default_roles
    from jupyterhub.scopes import expand_scopes

    from spawner.core import roles

    cfg = StackhubConfig.model_validate({"hub": {"subdomains": False, "adminUsers": ["ada"]}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    assert c.Authenticator.admin_users == set()  # nobody holds JupyterHub's admin role
    assert c.TutorialAuthenticator.admin_names == {"ada"}  # who still logs in with the admin secret
    assert c.JupyterHub.load_groups == {"stackhub-admins": {"users": ["ada"]}}
    by_name = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert "admin" not in by_name
    admin = by_name["stackhub-admin"]
    assert admin["groups"] == ["stackhub-admins"] and "services" not in admin
    assert by_name["stackhub-operator"]["services"] == ["stackhub-admin"]  # `make token`'s, for scripts
    for role in c.JupyterHub.load_roles:  # instructors, services, the admins: none reaches a server
        granted = expand_scopes(role.get("scopes", []))
        assert not {"access:servers", "shares"} & granted, role["name"]
        assert "tokens" not in granted or role["name"] == "stackhub-operator", role["name"]
    # the admins' scopes are JupyterHub's admin role's, less exactly what is withheld
    stock = next(r for r in get_default_roles() if r["name"] == "admin")["scopes"]
    assert sorted(roles.HELPER_ADMIN_SCOPES) == sorted(set(stock) - set(roles.WITHHELD_SCOPES) | {"read:tokens"})


def test_stackhub_admins_are_admins_in_the_services_and_the_spawn_policy():
    from spawner.core.roles import is_admin

    assert is_admin(True, []) and is_admin(False, ["stackhub-admins"]) and is_admin(None, ["x", "stackhub-admins"])
    assert not is_admin(False, ["instructors"]) and not is_admin(None, None)


def test_on_the_shared_origin_oauth_admins_come_from_provider_groups():
    import pytest
    from pydantic import ValidationError

    from spawner.hub.auth import GroupMapper

    oauth = {"type": "github", "clientId": "x", "adminGroups": ["org:staff"]}
    with pytest.raises(ValidationError, match="auth.adminGroups, not hub.adminUsers"):
        StackhubConfig.model_validate({"hub": {"subdomains": False, "adminUsers": ["ada"]}, "auth": oauth})
    mapper = GroupMapper(type="oidc", claim="groups", allowed=frozenset(), admin=frozenset({"staff"}),
                         instructor=frozenset(), admins_group="stackhub-admins")
    assert mapper({"oauth_user": {"groups": ["staff"]}}) == ["stackhub-admins", "staff"]


def test_account_rules_reach_the_tutorial_login(tmp_path):
    c = apply_config(Config(), StackhubConfig(), paths(tmp_path))
    t = c.TutorialAuthenticator
    assert c.JupyterHub.active_server_limit == 200
    assert (t.failures_per_name, t.failures_per_address, t.login_window, t.claims_per_address_per_hour) == \
        (10, 30, 300, 120)
    assert t.trusted_proxies == ["stackhub-proxy", "stackhub-proxy-api"]
    assert t.retire_deleted_names is True and t.staff_names == set()
    [templates] = c.JupyterHub.template_paths
    assert (Path(templates) / "login.html").is_file() and (Path(templates) / "change_password.html").is_file()
    cfg = StackhubConfig.model_validate({
        "hub": {"activeServerLimit": 40, "prefix": "site"}, "volumes": {"deleteHomeWithUser": True},
        "auth": {"type": "shared-password", "staffNames": ["Grace", "grace", "teach"],
                 "loginThrottle": {"failuresPerName": 0, "claimsPerAddressPerHour": 300}}})
    c = apply_config(Config(), cfg, paths(tmp_path))
    t = c.TutorialAuthenticator
    assert c.JupyterHub.active_server_limit == 40
    assert t.staff_names == {"grace", "teach"} and t.retire_deleted_names is False
    assert t.failures_per_name == 0 and t.claims_per_address_per_hour == 300
    assert t.trusted_proxies == ["site-proxy", "site-proxy-api"]


def test_limits_are_checked_in_the_config():
    import pytest

    for bad in ({"hub": {"requestBodyLimit": "lots"}}, {"hub": {"namedServers": {"totalMemory": "8 GB"}}},
                {"hub": {"activeServerLimit": -1}}, {"auth": {"type": "shared-password", "loginThrottle": {"window": 1}}}):
        with pytest.raises(ValueError):
            StackhubConfig.model_validate(bad)


def test_on_kubernetes_limits_per_address_are_left_to_the_ingress(tmp_path):
    cfg = StackhubConfig.model_validate({"spawner": {"backend": {"type": "kubernetes"}}})
    t = apply_config(Config(), cfg, paths(tmp_path)).TutorialAuthenticator
    assert t.failures_per_address == 0 and t.claims_per_address_per_hour == 0
    assert t.failures_per_name == 10 and "trusted_proxies" not in t
