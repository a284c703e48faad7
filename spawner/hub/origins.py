"""Which origin each part of the deployment answers on (JupyterHub's ``subdomain_hook``).

In subdomain mode (``hub.subdomains``, the default) every user server has a host of its own,
``<user>.<server domain>``: a page an attendee serves from their server (a lab extension, a
``python -m http.server`` behind ``/user/NAME/proxy/PORT/``, or a program that replaced the
single-user server) then runs on an origin that is not the hub's, so it can neither read the hub's
XSRF token nor send the hub's cookie with a same-origin request. A helper who opens it stays safe.

Services follow the same rule with one exception: stackhub's own pages (sessions, courses) serve no
user content and stay on the hub's origin, at the ``/services/NAME/`` URLs the admins know.
Every other service (dask-gateway, whose dashboards show what users' clusters send) gets
``<name>--service.<server domain>``, JupyterHub's own naming.
"""

from __future__ import annotations

from dataclasses import dataclass

from jupyterhub.utils import subdomain_hook_idna

from spawner.core.names import COURSES_SERVICE, SESSIONS_SERVICE

HUB_ORIGIN_SERVICES = frozenset({SESSIONS_SERVICE, COURSES_SERVICE})


@dataclass(frozen=True)
class SubdomainHook:
    """``JupyterHub.subdomain_hook``: users and foreign services under ``server_domain`` (JupyterHub's
    ``idna`` encoding, so any username gives a valid, unique DNS label); our own services on the hub's
    domain."""

    server_domain: str

    def __call__(self, name: str, domain: str, kind: str) -> str:
        if kind == "service" and name in HUB_ORIGIN_SERVICES:
            return domain
        return subdomain_hook_idna(name, self.server_domain, kind)


def server_origin(hub, username: str) -> str:
    """Where ``username``'s servers answer, ``https://<host>[:port]/`` (``hub`` is the config's
    ``hub`` section): their own host in subdomain mode, the hub's otherwise. The same name
    JupyterHub gives them, for the CLI's messages, the load bench and the tests."""
    host = SubdomainHook(hub.user_domain)(username, hub.public_host, "user") if hub.subdomains else hub.public_host
    return f"https://{host}{hub.port_suffix}/"
