"""Names of Docker objects (containers, volumes, services), made in one place.

JupyterHub usernames may hold dots, plus signs, capitals and any Unicode letter; Docker names may
not. ``escapism`` maps a name to ``[a-z0-9-]`` injectively (anything else becomes ``-XX`` hex), so
``Ann`` and ``ann`` get different objects, and since an escaped name never holds ``--`` that
separator cannot be forged by a username or a server name.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass

from escapism import escape

_SAFE = set(string.ascii_lowercase + string.digits)
PREFIX = "stackhub"  # the default deployment's prefix (hub.prefix)


def escape_name(name: str) -> str:
    """Escape a username or server name into Docker-safe ``[a-z0-9-]``."""
    return escape(name, safe=_SAFE, escape_char="-")


def container_name(username: str, server_name: str = "", prefix: str = PREFIX) -> str:
    """Container (or Swarm service) of one server of one user.

    Under ``<prefix>-user-``, a namespace none of the deployment's own objects use: a user named
    ``hub`` or ``proxy`` gets ``stackhub-user-hub``, never the hub's or proxy's container.
    """
    base = f"{prefix}-user-{escape_name(username)}"
    return f"{base}--{escape_name(server_name)}" if server_name else base


def kube_name(name: str) -> str:
    """A container or volume name as a Kubernetes object name (lower-case DNS-1123).

    ``escape_name`` writes its escapes in upper-case hex (``big-run`` -> ``big-2Drun``), which
    Docker takes and Kubernetes does not. Every ``-`` of an escaped name starts an escape, so
    lower-casing the hex keeps names apart: the map stays injective.
    """
    return name.lower()


def home_volume_name(username: str, template: str = "stackhub-home-{user}") -> str:
    """The user's home volume: one per user, shared by all of the user's named servers."""
    return template.format(user=escape_name(username))


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def server_domain(public_host: str, configured: str | None = None) -> str:
    """The domain user servers' hosts are under in subdomain mode (``<user>.<domain>``).

    The hub's own host by default. A single-label host (``localhost``, an intranet name) gets
    ``users.`` in front: browsers and OpenSSL refuse a wildcard certificate directly under one
    label (``*.localhost`` fails with ERR_CERT_COMMON_NAME_INVALID in Chromium and curl), while
    ``*.users.localhost`` is accepted, and browsers resolve every ``*.localhost`` to loopback.
    """
    if configured:
        return configured
    host = public_host.lower().rstrip(".")
    return host if "." in host else f"users.{host}"


def wildcard_hosts(public_host: str, configured: str | None = None) -> list[str]:
    """Names a certificate must hold in subdomain mode: the hub's host and ``*.<server domain>``
    (every user server and every service on an origin of its own)."""
    return [public_host, f"*.{server_domain(public_host, configured)}"]


@dataclass(frozen=True)
class Deployment:
    """The names of one deployment's own objects, from its prefix (``hub.prefix``).

    Two deployments on one engine (a tutorial's and a test run's) differ in the prefix, and so in
    every container name and in the ``stackhub.deployment`` label that ``down`` goes by.
    """

    prefix: str = PREFIX

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    @property
    def proxy(self) -> str:
        return f"{self.prefix}-proxy"

    @property
    def proxy_api(self) -> str:
        """The proxy's alias on the hub-only network, where its API listens."""
        return f"{self.prefix}-proxy-api"

    def server(self, username: str, server_name: str = "") -> str:
        return container_name(username, server_name, self.prefix)

    def labels(self, role: str) -> dict:
        return {LABEL_ROLE: role, LABEL_DEPLOYMENT: self.prefix}

    # Kubernetes (helm/stackhub names the same objects from the same prefix; a unit test renders
    # the chart and checks that they agree)
    @property
    def catalog_configmap(self) -> str:
        """ConfigMap listing the stack tags (written by ``stackhub images catalog``)."""
        return f"{self.prefix}-stack-catalog"

    @property
    def hub_config(self) -> str:
        """ConfigMap holding the hub's stackhub.yaml (the chart's values)."""
        return f"{self.prefix}-config"

    @property
    def hub_secrets(self) -> str:
        """Secret holding the hub's generated secrets (room code, admin password and token, proxy token)."""
        return f"{self.prefix}-secrets"

    @property
    def service_account(self) -> str:
        return f"{self.prefix}-hub"

    # dask-gateway (spawner.backend.daskGateway; helm/stackhub/templates/dask-gateway.yaml)
    @property
    def dask_gateway(self) -> str:
        """The gateway's API server (Deployment, Service, ServiceAccount; its KubeBackend instance)."""
        return f"{self.prefix}-dask-gateway"

    @property
    def dask_gateway_controller(self) -> str:
        return f"{self.prefix}-dask-gateway-controller"

    @property
    def dask_gateway_traefik(self) -> str:
        """Traefik, the gateway's proxy: the address users' clients and the hub's proxy talk to."""
        return f"{self.prefix}-dask-gateway-traefik"

    def owns_server(self, labels: dict | None) -> bool:
        """Labels of a user server of this deployment (an unlabelled deployment is the default one)."""
        labels = labels or {}
        return (labels.get(LABEL_ROLE) == "server" and bool(labels.get(LABEL_USER))
                and labels.get(LABEL_DEPLOYMENT, PREFIX) == self.prefix)

    def is_server_of(self, labels: dict | None, username: str, server_name: str = "") -> bool:
        """Labels of exactly ``username``'s server ``server_name`` of this deployment: what a
        spawner or a service must see before it starts, stops or execs into an engine object."""
        labels = labels or {}
        return (self.owns_server(labels) and labels.get(LABEL_USER) == username
                and labels.get(LABEL_SERVER, "") == (server_name or ""))


SESSIONS_SERVICE = "stackhub-sessions"  # the admins' page: /services/stackhub-sessions/
COURSES_SERVICE = "stackhub-courses"  # the instructors' page: /services/stackhub-courses/
DASK_GATEWAY_SERVICE = "dask-gateway"  # the JupyterHub service: /services/dask-gateway/
HUB_API_PORT = 8081  # the hub's own port (its API): users' servers and services connect to it
DASK_GATEWAY_WEB_PORT = 80  # Traefik's Service: HTTP (the gateway's API, dashboards)
DASK_GATEWAY_TCP_PORT = 8786  # and TCP (TLS to the schedulers, routed by SNI)


# the hub's ports, its services, groups and paths: every part that needs one imports it from here
HUB_PORT = 8081  # the hub's API and pages (the proxy's default target)
PROXY_API_PORT = 8001  # configurable-http-proxy's API, on hub.apiNetwork only
ADMIN_SERVICE = "stackhub-admin"  # the service whose token `make token` prints
SESSIONS_PORT = 8090
DISKWATCH_SERVICE = "stackhub-diskwatch"
ORPHANS_SERVICE = "stackhub-orphans"
INSTRUCTORS_GROUP = "instructors"  # may publish courses (the course service's role)
HUB_COURSES = "/srv/stackhub/courses"  # the courses volume in the hub container (read-write)
DASK_GATEWAY_TOKEN = "dask-gateway-token"  # the gateway's service token (a secret file; helm/stackhub's Secret)

LABEL_DEPLOYMENT = "stackhub.deployment"
LABEL_USER = "stackhub.user"
LABEL_SERVER = "stackhub.server"
LABEL_ROLE = "stackhub.role"
