"""Which usernames a tutorial login accepts: normalised first, then checked. Pure, no I/O.

An attendee types a name; the hub must never let that name stand for something else. So every
check runs on the normalised form (Unicode NFKC, stripped, lower case), the name must match
``usernamePattern`` (ASCII by default, so ``аdmin`` with a Cyrillic ``а`` is refused rather than
looking like ``admin``), and names of the deployment's own parts are reserved.
"""

from __future__ import annotations

import re
import unicodedata

DEFAULT_PATTERN = r"^[a-z][a-z0-9._-]{1,31}$"
PATTERN_HELP = "2-32 characters: a lower-case letter first, then letters, digits, '.', '_' or '-'"

# Names that stand for the deployment, its services or the system: never an attendee's.
RESERVED = frozenset({
    "admin", "administrator", "root", "hub", "jupyterhub", "proxy", "chp", "stackhub", "system",
    "services", "service", "user", "users", "api", "hub-admin", "nobody", "daemon", "docker",
    "lsst", "instructors", "instructor", "courses", "sessions", "culler", "idle-culler",
})


def normalize(name: str) -> str:
    """The one form every check and every stored record uses."""
    return unicodedata.normalize("NFKC", name).strip().lower()


def refusal(name: str, *, pattern: str = DEFAULT_PATTERN, reserved: frozenset[str] | set[str] = RESERVED,
            allowed_reserved: frozenset[str] | set[str] = frozenset()) -> str | None:
    """Why ``name`` (already normalised) cannot be claimed, or None if it can.

    ``allowed_reserved``: reserved names that are this hub's own accounts (e.g. the configured
    admin names), which log in by their own route and so are not refused here.
    """
    if not re.fullmatch(pattern, name):
        return f"the name {name!r} is not allowed: use {PATTERN_HELP if pattern == DEFAULT_PATTERN else 'a name matching ' + pattern}"
    if (name in reserved or name.startswith("stackhub")) and name not in allowed_reserved:
        return f"the name {name!r} is reserved for the hub itself; please pick another one"
    return None
