"""The home disk budget's policy, pure: sizes and servers in, records and actions out.

Used by the watcher (services/diskwatch.py, the I/O) and the spawn page (hub/disk_store.py).
"""

import time
from dataclasses import dataclass, replace
from typing import Literal

from spawner.core import names

WARNING_FILE = "DISK-QUOTA-WARNING.txt"


Status = Literal["warn", "over", "grace", "clear"]


STATUSES = ("warn", "over", "grace", "clear")


def human(n: int) -> str:
    """A size for people: 512 MiB, 10.4 GiB (binary units, as the budget's)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def clock(t: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(t))


@dataclass(frozen=True)
class Budget:
    limit: int  # bytes
    warn: float = 0.9  # fraction of limit
    grace: float = 1800.0  # seconds a restarted over-budget server may run to clean up

    @property
    def warn_at(self) -> int:
        return int(self.limit * self.warn)


@dataclass(frozen=True)
class Record:
    """What the watcher knows of one user's home between checks (stored in disk-budget.json).

    ``warn``: between the warning level and the budget. ``over``: over the budget, no server
    running (stopped by the watcher at ``stopped_at``, or found so). ``grace``: over the budget and
    started again to clean up, until ``grace_until``, as long as it stays under ``ceiling``.
    ``clear``: back under the warning level, but a warning file may still be in the home (removed
    when a server next runs). ``warned``: the current status's notice was written into a server.
    """

    status: Status
    size: int
    since: float
    warned: bool = False
    stopped_at: float | None = None
    grace_until: float | None = None
    ceiling: int | None = None

    @classmethod
    def from_json(cls, data) -> "Record":
        """A stored record, checked field by field; anything else is a ValueError."""
        if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
            raise ValueError(f"not a record: {data!r:.200}")
        if data.get("status") not in STATUSES:
            raise ValueError(f"unknown status {data.get('status')!r:.50}")

        def number(key, kind=(int, float), optional=True):
            v = data.get(key)
            if v is None and optional:
                return None
            if isinstance(v, bool) or not isinstance(v, kind) or v < 0:
                raise ValueError(f"{key} must be a non-negative number, not {v!r:.50}")
            return v

        warned = data.get("warned", False)
        if not isinstance(warned, bool):
            raise ValueError(f"warned must be true or false, not {warned!r:.50}")
        return cls(status=data["status"], size=number("size", int, False), since=number("since", optional=False),
                   warned=warned, stopped_at=number("stopped_at"), grace_until=number("grace_until"),
                   ceiling=number("ceiling", int))


@dataclass(frozen=True)
class Action:
    """What the watcher does for one user: ``warn`` (write the notice into the running servers),
    ``stop`` (write it, then stop ``servers``), ``clear`` (remove the warning file)."""

    kind: Literal["warn", "stop", "clear"]
    user: str
    message: str = ""
    servers: tuple[str, ...] = ()


def message(record: Record, budget: Budget, now: float) -> str:
    """What the user is told, in the warning file and on the spawn page."""
    used = f"Your home uses {human(record.size)} of its {human(budget.limit)} disk budget"
    minutes = max(1, round(budget.grace / 60))
    tip = "Delete files you no longer need (in a terminal, `du -sh ~/* ~/.[!.]* | sort -h` lists the largest)."
    if record.status == "warn":
        return (f"{used} ({100 * record.size / budget.limit:.0f}%). When it passes {human(budget.limit)} your "
                f"server is stopped. {tip}")
    if record.status == "grace":
        return (f"{used}. Your server was stopped because of it and may run until {clock(record.grace_until)} "
                f"so you can clean up: bring the home under {human(budget.limit)} by then, and do not let it "
                f"grow, or the server is stopped again. {tip}")
    if record.status == "over":
        start = (f"{used}; your server was stopped at {clock(record.stopped_at)}. You can start it again"
                 if record.stopped_at else f"{used}. You can start your server")
        return (f"{start} to delete files: you then have {minutes} minute{'s' if minutes != 1 else ''} to "
                f"bring the home under {human(budget.limit)}, and it must not grow meanwhile. {tip}")
    return ""


def decide(sizes: dict[str, int], running: dict[str, list[str]], records: dict[str, Record], budget: Budget,
           now: float) -> tuple[dict[str, Record], list[Action]]:
    """(home sizes, each user's ready servers, last records, budget, now) -> (new records, actions).

    Users with no home volume any more lose their record. A user newly over the budget is stopped at
    once; one seen running again after that gets the grace window (the restart to clean up).
    """
    out: dict[str, Record] = {}
    actions: list[Action] = []
    for user in sorted(sizes):
        size, old, servers = sizes[user], records.get(user), tuple(running.get(user, ()))
        if size > budget.limit:
            rec, stop = _over(size, old, servers, budget, now)
            if stop:
                actions.append(Action("stop", user, message(rec, budget, now), servers))
            elif servers and rec.status == "grace" and not rec.warned:
                rec = replace(rec, warned=True)
                actions.append(Action("warn", user, message(rec, budget, now), servers))
        elif size >= budget.warn_at:
            rec = replace(old, size=size) if old and old.status == "warn" else Record("warn", size, now)
            if servers and not rec.warned:
                rec = replace(rec, warned=True)
                actions.append(Action("warn", user, message(rec, budget, now), servers))
        else:
            if old is None:
                continue
            rec = old if old.status == "clear" else Record("clear", size, now)
            if servers:
                actions.append(Action("clear", user, servers=servers))
                continue
        out[user] = rec
    return out, actions


def _over(size: int, old: Record | None, servers: tuple, budget: Budget, now: float) -> tuple[Record, bool]:
    """The new record of a home over the budget, and whether its running servers stop now."""
    stop = bool(servers)
    if old is not None and old.status == "grace":
        if now < old.grace_until and size <= old.ceiling:  # cleaning up: let it run
            return (replace(old, size=size) if servers else Record("over", size, old.since)), False
        return Record("over", size, old.since, stopped_at=now if stop else None), stop
    if old is not None and old.status == "over":
        if servers:  # started again after the stop: the window to clean up begins now
            return Record("grace", size, old.since, grace_until=now + budget.grace, ceiling=size), False
        return replace(old, size=size), False
    # newly over (or the record was lost): a running server stops now
    return Record("over", size, now, stopped_at=now if stop else None), stop


@dataclass(frozen=True)
class VolumeUsage:
    """One volume as an engine accounts for it (Docker: ``docker system df``)."""

    name: str
    labels: dict
    size: int  # bytes; -1 when the engine does not know


def measure_homes(volumes, template: str) -> dict[str, int]:
    """username -> bytes: volumes labelled as a user's home whose name is the one the config gives
    that user (a volume merely labelled so is not counted)."""
    out = {}
    for v in volumes or ():
        labels = v.labels or {}
        user = labels.get(names.LABEL_USER)
        if labels.get(names.LABEL_ROLE) != "home" or not user:
            continue
        if v.name != names.home_volume_name(user, template):
            continue
        if isinstance(v.size, int) and v.size >= 0:
            out[user] = v.size
    return out


def ready_servers(users: list[dict]) -> dict[str, list[str]]:
    """username -> names of the servers that are ready (pending ones are left to the next check)."""
    out = {}
    for u in users:
        ready = [name for name, s in (u.get("servers") or {}).items() if s.get("ready") and not s.get("pending")]
        if ready:
            out[u["name"]] = sorted(ready)
    return out


def budget_of(cfg) -> Budget:
    """The disk budget ``volumes`` sets (``cfg`` a StackhubConfig)."""
    v = cfg.volumes
    return Budget(v.home_budget_bytes, v.home_budget_warn, float(v.home_budget_grace_seconds))
