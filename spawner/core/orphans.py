"""Which user containers nobody owns any more (pure; ``spawner.services.orphans`` does the I/O).

A hub killed between creating a user's container and saving the spawner's state forgets the
container: after its restart the user has no server, and the container runs on with nobody to stop
it. Such a container is an orphan once the hub has not listed its server as active (ready or
pending) for ``grace`` seconds in a row; a spawn in flight is pending, so it is never one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerObject:
    """A user container of this deployment as the engine lists it."""

    user: str
    server: str
    name: str


def active_servers(users: list[dict]) -> set[tuple[str, str]]:
    """(user, server) of every server the hub lists as ready or pending (from ``GET /users``)."""
    return {(u["name"], name) for u in users for name in (u.get("servers") or {})}


def orphans(objects: list[ServerObject], active: set[tuple[str, str]], unknown_since: dict[str, float],
            now: float, grace: float) -> tuple[list[ServerObject], dict[str, float]]:
    """The containers to remove now, and the new ``unknown_since`` (container name -> first time
    seen without an active server). A container the hub knows again leaves that record."""
    keep: dict[str, float] = {}
    remove = []
    for obj in objects:
        if (obj.user, obj.server) in active:
            continue
        since = unknown_since.get(obj.name, now)
        if now - since >= grace:
            remove.append(obj)
        else:
            keep[obj.name] = since
    return remove, keep
