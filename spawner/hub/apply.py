"""Apply the stackhub config model to JupyterHub's traitlets ``Config``.

As in the-littlest-jupyterhub, config is only *set*, never appended or mutated, in small
``update_*`` steps that each own one concern. ``jupyterhub_config.py`` calls ``apply_config``; unit
tests call it on a plain ``Config()``. What comes from outside the config (secret files, generated
0600 by ``stackhub up``; the OAuth client secret; the OIDC discovery document) is read first, by
``read_inputs``, and never logged; the steps themselves do no I/O.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from spawner.core.config import CONFIG_JSON_ENV, StackhubConfig, services_json
from spawner.core import names, roles
from spawner.core.names import (ADMIN_SERVICE, COURSES_SERVICE, DASK_GATEWAY_TOKEN, DISKWATCH_SERVICE, HUB_PORT,
                                 INSTRUCTORS_GROUP, ORPHANS_SERVICE, PROXY_API_PORT, SESSIONS_PORT, SESSIONS_SERVICE,
                                 Deployment)
from spawner.state.paths import HubPaths
from spawner.core.specs import dask_gateway_enabled

# the spawner of each backend (import paths: the hub image loads only the one it runs)
SPAWNER_CLASSES = {
    "docker": "spawner.backends.docker.spawner.LSSTDockerSpawner",
    "kubernetes": "spawner.backends.kubernetes.spawner.LSSTKubeSpawner",
    "swarm": "spawner.backends.swarm.spawner.LSSTSwarmSpawner",
}
DB_URL_ENV = "STACKHUB_DB_URL"  # an external database (the Helm chart's hubDatabase), from a Secret
TUTORIAL_TEMPLATES = str(Path(__file__).resolve().parents[1] / "templates" / "hub")
LOGIN_ANNOUNCEMENT = (
    "First time here? Type a name, the room code you were given, and a password of your own "
    "(at least {n} characters), twice. Next time: your name and your password."
)


@dataclass(frozen=True)
class HubInputs:
    """Everything the ``update_*`` steps need from outside the config: secret files and, for
    OAuth, the client secret and the provider's discovery document. Read once, before any step
    runs (``read_inputs``), so the steps only set traits and a missing secret stops the hub before
    anything is half-configured."""

    secrets: dict = field(repr=False)  # secret file name -> value
    oauth: object = field(default=None, repr=False)  # spawner.hub.auth.OAuthInputs
    db_url: str | None = field(default=None, repr=False)  # an external database (it holds a password)

    def secret(self, name: str) -> str:
        return self.secrets[name]


def read_inputs(cfg: StackhubConfig, paths: HubPaths, **oauth_kw) -> HubInputs:
    auth = cfg.auth
    wanted = ["proxy-token", "admin-token"]
    secrets = {}
    oauth = None
    if auth.type == "shared-password":
        wanted.append("admin-password")
        if auth.password_file:
            secrets["shared-password"] = auth.password_file.read_text().strip()
        else:
            wanted.append("shared-password")
    else:
        from spawner.hub.auth import read_oauth_inputs

        oauth = read_oauth_inputs(cfg, **oauth_kw)
    if dask_gateway_enabled(cfg):
        wanted.append(DASK_GATEWAY_TOKEN)
    secrets.update({name: paths.secret(name) for name in wanted})
    return HubInputs(secrets=secrets, oauth=oauth, db_url=os.environ.get(DB_URL_ENV) or None)


def update_hub(c, cfg: StackhubConfig, paths: HubPaths, inputs: HubInputs):
    hub = cfg.hub
    c.JupyterHub.bind_url = "http://0.0.0.0:8000"  # the proxy container serves the public side
    c.JupyterHub.public_url = f"https://{hub.public_host}:{hub.https_port}/"
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{HUB_PORT}"
    c.JupyterHub.hub_connect_url = f"http://{Deployment(hub.prefix).hub}:{HUB_PORT}"
    c.JupyterHub.db_url = inputs.db_url or f"sqlite:///{paths.state / 'jupyterhub.sqlite'}"
    # a hub upgraded across a JupyterHub major (5 -> 6) finds an older schema: JupyterHub migrates it
    # instead of refusing to start, after copying a SQLite file aside (jupyterhub.sqlite.<date>; an
    # external database is the site's to back up first)
    c.JupyterHub.upgrade_db = True
    c.JupyterHub.cookie_secret_file = str(paths.state / "jupyterhub_cookie_secret")
    c.JupyterHub.allow_named_servers = hub.named_servers.enabled
    c.JupyterHub.named_server_limit_per_user = hub.named_servers.limit
    c.JupyterHub.concurrent_spawn_limit = hub.concurrent_spawn_limit
    c.JupyterHub.active_server_limit = hub.active_server_limit
    # servers outlive the hub: a restarted hub finds them again through their saved state
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.tornado_settings = {
        "headers": {"Strict-Transport-Security": f"max-age={cfg.tls.hsts_max_age}; includeSubDomains"},
        "cookie_options": {"secure": True},
    }
    c.Authenticator.admin_users = set(hub.admin_users)
    update_origins(c, cfg)


def update_origins(c, cfg: StackhubConfig):
    """Subdomain mode (the default): each user server on an origin of its own
    (spawner.hub.origins), the proxy routing by host, and the hub's cookies ``__Host-`` prefixed so a
    user's subdomain cannot toss a cookie onto the hub's host."""
    hub = cfg.hub
    if not hub.subdomains:
        return
    from spawner.hub.origins import SubdomainHook

    c.JupyterHub.subdomain_host = f"https://{hub.public_host}{hub.port_suffix}"
    c.JupyterHub.subdomain_hook = SubdomainHook(hub.user_domain)
    c.JupyterHub.cookie_host_prefix_enabled = True


def update_proxy(c, cfg: StackhubConfig, paths: HubPaths, inputs: HubInputs):
    """The proxy runs in its own container (it terminates TLS), so a hub restart keeps routes."""
    c.JupyterHub.proxy_class = "configurable-http-proxy"
    c.ConfigurableHTTPProxy.should_start = False
    # the hub re-adds missing routes at each of these checks: a proxy restarted alone (it keeps no
    # routes) serves every user and service again within this many seconds
    c.JupyterHub.last_activity_interval = cfg.hub.route_check_seconds
    # the proxy's alias on hub.apiNetwork only: its API listens there
    c.ConfigurableHTTPProxy.api_url = f"http://{Deployment(cfg.hub.prefix).proxy_api}:{PROXY_API_PORT}"
    c.ConfigurableHTTPProxy.auth_token = inputs.secret("proxy-token")


def update_spawner(c, cfg: StackhubConfig, paths: HubPaths, inputs: HubInputs):
    from spawner.hub.policy_store import HubPolicy

    c.JupyterHub.spawner_class = SPAWNER_CLASSES[cfg.spawner.backend.type]
    # every backend's spawner shares these (spawner.backends.base.StackhubSpawnerMixin)
    shared = c.StackhubSpawnerMixin
    shared.stackhub_config = json.loads(services_json(cfg))  # the one route, as the services get it
    shared.state_dir = str(paths.state)
    # hidden tags, recommended override and session locks, changed at run time by stackhub-sessions
    # a bad policy file keeps the last good policy and is logged at error level in the hub's log
    shared.policy_class = HubPolicy
    if cfg.volumes.home_budget:  # the spawn page tells a user what stackhub-diskwatch found
        from spawner.hub.disk_store import DiskNotices

        shared.disk_notices_class = DiskNotices
    if cfg.spawner.backend.type in ("docker", "swarm"):  # LSSTSwarmSpawner is an LSSTDockerSpawner
        c.LSSTDockerSpawner.docker_workers = cfg.spawner.backend.workers
        c.LSSTDockerSpawner.start_concurrency = cfg.spawner.backend.starting
    c.Spawner.start_timeout = cfg.hub.start_timeout
    c.Spawner.http_timeout = 120
    c.Spawner.default_url = "/lab"


def update_auth(c, cfg: StackhubConfig, paths: HubPaths, inputs: HubInputs):
    auth = cfg.auth
    if auth.type == "shared-password":
        # the room code only admits new names; each name is its owner's (spawner.hub.tutorial_auth)
        c.JupyterHub.authenticator_class = "spawner.hub.tutorial_auth.TutorialAuthenticator"
        t = c.TutorialAuthenticator
        t.room_code = inputs.secret("shared-password")
        t.admin_password = inputs.secret("admin-password")
        t.dbm_path = str(paths.state / "tutorial-passwords")
        t.min_password_length = auth.min_password_length
        t.username_pattern = auth.username_pattern
        t.allow_all = True
        update_accounts(t, cfg)
        c.JupyterHub.template_paths = [TUTORIAL_TEMPLATES]  # the claim form asks the password twice
        c.JupyterHub.template_vars = {"announcement_login": LOGIN_ANNOUNCEMENT.format(n=auth.min_password_length)}
    else:
        from spawner.hub.auth import update_oauth

        update_oauth(c, cfg, inputs.oauth)


def update_accounts(t, cfg: StackhubConfig):
    """The tutorial login's account rules: staff names, throttling, retired names, the proxy."""
    auth, throttle = cfg.auth, cfg.auth.login_throttle
    t.staff_names = set(auth.staff_names)
    t.login_window = throttle.window
    t.failures_per_name = throttle.failures_per_name
    # a deleted user's name is never claimed again while a kept home would go with it
    t.retire_deleted_names = not cfg.volumes.delete_home_with_user
    if cfg.spawner.backend.type == "kubernetes":
        # behind a Service and an Ingress the hub cannot tell one client from another (every request
        # comes from the proxy pod, forwarded for the ingress controller): limits per address would
        # hold the whole room. Per-name limits stay; per-address ones belong to the site's ingress.
        t.failures_per_address = t.claims_per_address_per_hour = 0
        return
    t.failures_per_address = throttle.failures_per_address
    t.claims_per_address_per_hour = throttle.claims_per_address_per_hour
    own = Deployment(cfg.hub.prefix)
    # X-Forwarded-For is taken from these alone (their names resolve to the container or, on Swarm's
    # dnsrr endpoints, the task's own address)
    t.trusted_proxies = [own.proxy, own.proxy_api]


def managed_service(cfg: StackhubConfig, paths: HubPaths, name: str, module: str, port: int | None = None) -> dict:
    """A service the hub starts (``python -m module``) with the config by its one route; with a
    ``port``, a page users reach through the hub's OAuth, without a confirmation step."""
    service = {"name": name, "command": [sys.executable, "-m", module], "environment": service_environment(cfg, paths)}
    if port is not None:
        service.update(url=f"http://{Deployment(cfg.hub.prefix).hub}:{port}", oauth_no_confirm=True, display=True)
    return service


def sessions_service(cfg: StackhubConfig, paths: HubPaths) -> tuple[dict, dict]:
    """The admins' tags / sessions / pre-warm service (spawner.services.sessions) and its role."""
    service = managed_service(cfg, paths, SESSIONS_SERVICE, "spawner.services.sessions", SESSIONS_PORT)
    role = {
        "name": SESSIONS_SERVICE,
        "description": "start and stop anyone's server with a tag; read users and groups",
        "scopes": ["admin:servers", "list:users", "read:users", "list:groups", "read:groups"],
        "services": [SESSIONS_SERVICE],
    }
    return service, role


def courses_service(cfg: StackhubConfig, paths: HubPaths) -> tuple[dict, dict]:
    """The instructors' course service (spawner.services.courses) and the role that lets them in."""
    service = managed_service(cfg, paths, COURSES_SERVICE, "spawner.services.courses", cfg.courses.service_port)
    # admins reach it through the admin role (access:services); the group is created if missing
    role = {
        "name": "course-instructors",
        "description": "publish courses and sync them into users' servers (the stackhub-courses service)",
        "scopes": [f"access:services!service={COURSES_SERVICE}"],
        "groups": [INSTRUCTORS_GROUP],
    }
    return service, role


def service_environment(cfg: StackhubConfig, paths: HubPaths) -> dict:
    """What every managed service is started with: the config (serialised once, the one route by
    which settings reach a service) and where the hub keeps its state."""
    return {CONFIG_JSON_ENV: services_json(cfg), "STACKHUB_HUB_STATE": str(paths.state),
            "STACKHUB_SECRETS": str(paths.secrets)}


def diskwatch_service(cfg: StackhubConfig, paths: HubPaths) -> tuple[dict, dict]:
    """The home budget watcher (spawner.services.diskwatch): sees who runs what, stops servers, nothing more."""
    service = managed_service(cfg, paths, DISKWATCH_SERVICE, "spawner.services.diskwatch")
    role = {
        "name": DISKWATCH_SERVICE,
        "description": "see users' servers and stop those whose home is over its disk budget",
        "scopes": ["list:users", "read:servers", "delete:servers"],
        "services": [DISKWATCH_SERVICE],
    }
    return service, role


def orphans_service(cfg: StackhubConfig, paths: HubPaths) -> tuple[dict, dict]:
    """The reaper of user containers the hub lost (spawner.services.orphans): reads, removes nothing through the hub."""
    service = managed_service(cfg, paths, ORPHANS_SERVICE, "spawner.services.orphans")
    role = {
        "name": ORPHANS_SERVICE,
        "description": "see which servers the hub knows, to remove user containers it forgot",
        "scopes": ["list:users", "read:servers"],
        "services": [ORPHANS_SERVICE],
    }
    return service, role


def dask_gateway_service(cfg: StackhubConfig, inputs: HubInputs):
    """dask-gateway as the hub service ``dask-gateway`` (as daskhub registers it): its token comes
    from the chart's Secret, its URL is Traefik's, so /services/dask-gateway/ (the clusters'
    dashboards) goes through the hub's proxy. The gateway accepts only tokens with
    ``access:services!service=dask-gateway``: every user holds it (the ``user`` role), and so does
    the token of their servers (``server_token_scopes``: the default ``server`` role's and this)."""
    traefik = Deployment(cfg.hub.prefix).dask_gateway_traefik
    if cfg.spawner.backend.namespace:  # Traefik runs in the users' namespace (the chart's)
        traefik = f"{traefik}.{cfg.spawner.backend.namespace}.svc"
    service = {
        "name": names.DASK_GATEWAY_SERVICE,
        "api_token": inputs.secret(DASK_GATEWAY_TOKEN),
        "url": f"http://{traefik}:{names.DASK_GATEWAY_WEB_PORT}",
        "display": False,
        # the clusters' dashboards log in through the hub (OAuth, the gateway's forward-auth): the
        # user's name only, no consent page
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [],
    }
    access = f"access:services!service={names.DASK_GATEWAY_SERVICE}"
    role = {"name": "user", "scopes": ["self", access]}
    token_scopes = ["users:activity!user", "access:servers!server", access]
    return service, role, token_scopes


def update_services(c, cfg: StackhubConfig, paths: HubPaths, inputs: HubInputs):
    """The admin token service (``make token``), the sessions service, the idle culler, the course
    service, the home budget watcher, the reaper of forgotten user containers and dask-gateway."""
    sessions, sessions_role = sessions_service(cfg, paths)
    services = [{"name": ADMIN_SERVICE, "api_token": inputs.secret("admin-token")}, sessions]
    roles = [{"name": "admin", "services": [ADMIN_SERVICE]}, sessions_role]
    if cfg.culler.enabled:
        services.append({
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                        f"--timeout={cfg.culler.timeout}", f"--cull-every={cfg.culler.every}"],
        })
        roles.append({
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        })
    if cfg.courses.enabled:
        courses, courses_role = courses_service(cfg, paths)
        services.append(courses)
        roles.append(courses_role)
    if cfg.volumes.home_budget:
        diskwatch, diskwatch_role = diskwatch_service(cfg, paths)
        services.append(diskwatch)
        roles.append(diskwatch_role)
    if cfg.spawner.backend.type == "docker":  # Swarm and Kubernetes reschedule or remove their own
        orphans, orphans_role = orphans_service(cfg, paths)
        services.append(orphans)
        roles.append(orphans_role)
    if dask_gateway_enabled(cfg):
        gateway, users_role, token_scopes = dask_gateway_service(cfg, inputs)
        services.append(gateway)
        roles.append(users_role)
        c.Spawner.server_token_scopes = token_scopes
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def update_helper_roles(c, cfg: StackhubConfig, paths: HubPaths, inputs: HubInputs):
    """The shared-origin fallback (``hub.subdomains: false``): admins hold ``stackhub-admin``, never
    JupyterHub's ``admin`` role, and so cannot open other users' servers (spawner.core.roles). Runs
    last: it takes back the admin flags the steps before it set."""
    if cfg.hub.subdomains:
        return
    admins = set(c.Authenticator.admin_users)
    c.Authenticator.admin_users = set()
    if cfg.auth.type == "shared-password":
        c.TutorialAuthenticator.admin_names = admins  # still the names that log in with the admin secret
        c.TutorialAuthenticator.admins_group = roles.ADMINS_GROUP  # where a take-over puts a new admin
    else:
        from spawner.hub.auth import SECTIONS

        section = c[SECTIONS[cfg.auth.type]]
        if "admin_users" in section:  # the provider's section wins over Authenticator's
            admins = set(section.admin_users)
        section.admin_users = set()
        section.admin_groups = set()  # provider admin groups join stackhub-admins instead (GroupMapper)
    c.JupyterHub.load_groups = {roles.ADMINS_GROUP: {"users": sorted(admins)}}
    c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, roles.admin_role(admins)]
    for role in c.JupyterHub.load_roles:  # `make token`'s service: scripts only, never a browser
        if role["name"] == "admin":
            role["name"] = roles.OPERATOR_ROLE
            role["scopes"] = list(roles.OPERATOR_SCOPES)


STEPS = (update_hub, update_proxy, update_spawner, update_auth, update_services, update_helper_roles)


def apply_config(c, cfg: StackhubConfig, paths: HubPaths | None = None, inputs: HubInputs | None = None):
    """Read what the steps need (``read_inputs``), then let each step set its traits."""
    paths = paths or HubPaths.from_env()
    inputs = inputs or read_inputs(cfg, paths)
    for step in STEPS:
        step(c, cfg, paths, inputs)
    return c
