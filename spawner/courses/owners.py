"""Who may change a published course: its owner (who first published it), the instructors it is
shared with, and admins. Pure rules; the store keeps ``<course>/owners.json``.

A course published before owners were kept has no file: its owner is then the first publisher its
history names (the oldest entry), so an upgrade gives every course the owner it had in practice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# a hub user name as the course service receives it (tutorial names, OAuth logins, e-mail addresses)
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
MAX_SHARED = 100


class OwnersError(ValueError):
    """An owners record or request that does not fit the rules (the message says which)."""


@dataclass(frozen=True)
class Ownership:
    owner: str | None
    shared: tuple[str, ...] = ()

    def may_change(self, who: str, *, admin: bool) -> bool:
        """Admins change any course; an instructor only their own and those shared with them."""
        return admin or (self.owner is not None and who == self.owner) or who in self.shared

    def to_json(self) -> dict:
        return {"owner": self.owner, "shared": list(self.shared)}


def check_user(name) -> str:
    if not (isinstance(name, str) and USER_NAME.fullmatch(name)):
        raise OwnersError(f"{name!r} is not a user name (letters, digits, '.', '_', '@', '+', '-')")
    return name


def parse(data, *, fallback_owner: str | None = None) -> Ownership:
    """An ``owners.json`` (or an API request's body) as an Ownership; OwnersError if it is not one."""
    if data is None:
        return Ownership(fallback_owner)
    if not isinstance(data, dict) or set(data) - {"owner", "shared"}:
        raise OwnersError('owners must be {"owner": NAME, "shared": [NAME, ...]}')
    shared = data.get("shared", [])
    if not isinstance(shared, list) or len(shared) > MAX_SHARED:
        raise OwnersError(f'"shared" must be a list of at most {MAX_SHARED} user names')
    owner = data.get("owner")
    return Ownership(None if owner is None else check_user(owner),
                     tuple(sorted({check_user(u) for u in shared})))


def first_publisher(history) -> str | None:
    """The publisher of the oldest entry of a course's history (newest first), if it names one."""
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        who = history[-1].get("publisher")
        if isinstance(who, str) and USER_NAME.fullmatch(who):
            return who
    return None
