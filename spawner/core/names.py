"""Names of Docker objects (containers, volumes, services), made in one place.

JupyterHub usernames may hold dots, plus signs, capitals and any Unicode letter; Docker names may
not. ``escapism`` maps a name to ``[a-z0-9-]`` injectively (anything else becomes ``-XX`` hex), so
``Ann`` and ``ann`` get different objects, and since an escaped name never holds ``--`` that
separator cannot be forged by a username or a server name.
"""

from __future__ import annotations

import string

from escapism import escape

_SAFE = set(string.ascii_lowercase + string.digits)
PREFIX = "stackhub"
USER_PREFIX = f"{PREFIX}-user-"  # every user server's container; nothing else is named so


def escape_name(name: str) -> str:
    """Escape a username or server name into Docker-safe ``[a-z0-9-]``."""
    return escape(name, safe=_SAFE, escape_char="-")


def container_name(username: str, server_name: str = "") -> str:
    """Container (or Swarm service) of one server of one user.

    Under ``<prefix>-user-``, a namespace none of the deployment's own objects use: a user named
    ``hub`` or ``proxy`` gets ``stackhub-user-hub``, never the hub's or proxy's container.
    """
    base = f"{USER_PREFIX}{escape_name(username)}"
    return f"{base}--{escape_name(server_name)}" if server_name else base


def home_volume_name(username: str, template: str = "stackhub-home-{user}") -> str:
    """The user's home volume: one per user, shared by all of the user's named servers."""
    return template.format(user=escape_name(username))


HUB_CONTAINER = f"{PREFIX}-hub"
PROXY_CONTAINER = f"{PREFIX}-proxy"
LABEL_USER = "stackhub.user"
LABEL_SERVER = "stackhub.server"
LABEL_ROLE = "stackhub.role"
