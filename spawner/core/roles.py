"""Who is a stackhub admin, and what an admin may do, in each origins mode (pure).

In subdomain mode (the default) admins are JupyterHub admins: every user server is on an origin of
its own, so an admin who opens an attendee's page gives that page nothing of the hub.

In the shared-origin fallback (``hub.subdomains: false``) a page an attendee serves runs on the hub's
origin. There no helper may open another user's server: JupyterHub's ``admin`` role holds
``access:servers`` and JupyterHub refuses any change to its scopes, so admins are not JupyterHub
admins at all. They are members of the group ``stackhub-admins``, which holds the role
``stackhub-admin``: JupyterHub's admin scopes without ``access:servers``, ``shares`` (server sharing
stays off) and ``tokens`` (no token made for another user, which would carry that user's access).
Opening another user's server then ends at the hub's 403. ``make token``'s service, which scripts use
and no browser holds, has ``stackhub-operator``: the same, and ``tokens``, so a script acts in a user's
server only as that user, with a token made for them.
"""

from __future__ import annotations

ADMINS_GROUP = "stackhub-admins"
ADMIN_ROLE = "stackhub-admin"

# JupyterHub 6's admin role, less what reaches into other users' servers (a unit test compares the
# two lists, so a JupyterHub upgrade that adds an admin scope is seen)
HELPER_ADMIN_SCOPES = (
    "admin-ui", "admin:users", "admin:servers", "admin:services", "read:tokens", "admin:groups",
    "list:services", "read:services", "read:hub", "proxy", "shutdown", "access:services", "read:roles",
    "read:metrics",
)
WITHHELD_SCOPES = ("access:servers", "shares", "tokens")
# `make token`'s service (scripts, never a browser): the admins' scopes, and it may make a token for a
# user, so an operator's script can act as that user (in that user's server, as that user)
OPERATOR_ROLE = "stackhub-operator"
OPERATOR_SCOPES = (*HELPER_ADMIN_SCOPES, "tokens")


def is_admin(admin_flag: bool | None, groups) -> bool:
    """A JupyterHub admin (subdomain mode) or a member of ``stackhub-admins`` (fallback)."""
    return bool(admin_flag) or ADMINS_GROUP in set(groups or ())


def admin_role(users) -> dict:
    """The fallback's admin role (JupyterHub ``load_roles`` entry), held through the group."""
    return {"name": ADMIN_ROLE, "description": "stackhub admins on a shared origin: everything an admin does "
            "but opening other users' servers (docs/security.md)", "scopes": list(HELPER_ADMIN_SCOPES),
            "groups": [ADMINS_GROUP], "users": sorted(users)}
