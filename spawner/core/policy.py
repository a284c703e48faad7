"""The run-time tag policy: hidden tags, the ``recommended`` override and tutorial session locks.

Admins change it while the hub runs (through the ``stackhub-sessions`` service); the spawner reads
it on every form and every spawn. Everything here is pure: a ``Policy`` is immutable data, the
changes are functions ``Policy -> Policy`` that refuse what would break spawns, and what one user
may start is ``restriction(policy, user=..., groups=..., is_admin=..., now=...)``. Storage lives in
``policy_store``.

Rules (where the issue is silent, these are the choices):
- Admins are never restricted: no hidden tags, no session lock. The ``recommended`` override
  applies to everyone (it only changes what "recommended" means).
- A session applies to a user while ``start <= now < end`` (either bound may be open) and the user
  is in its group (or the session is for everyone). When several apply, one for a group wins over
  one for everyone, then the one that started last, then the one opened last.
- A session's tag is offered even if hidden: the lock names it explicitly.
- The effective recommended tag cannot be hidden, and a hidden tag cannot be recommended, or a
  spawn with no ``image_tag`` (which means ``recommended``) would be refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field

from spawner.core.options import Restriction
from spawner.core.tags import RECOMMENDED, TagError, parse_tag

STATE_VERSION = 1
_SESSION_NAME = re.compile(r"^[\w][\w .:@()+-]{0,79}$")


class PolicyError(ValueError):
    """A change that cannot be made; the message says why and what to do instead."""


class PolicyConflict(PolicyError):
    """A valid change that the current policy forbids (hiding the recommended tag, ...)."""


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """An aware UTC datetime; naive values are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def parse_time(value: str | None) -> dt.datetime | None:
    """ISO 8601 (``2026-12-01T09:00``, ``...Z`` or with an offset) to aware UTC; '' or None is open."""
    if not value:
        return None
    try:
        return utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (TypeError, ValueError):
        raise PolicyError(f"time {value!r} is not ISO 8601, e.g. 2026-12-01T09:00:00+00:00") from None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or tag == RECOMMENDED:
        raise PolicyError(f"{tag!r} is not a stack tag (name a real tag, e.g. w_2026_43)")
    try:
        parse_tag(tag)
    except TagError as e:
        raise PolicyError(str(e)) from None
    return tag


@dataclass(frozen=True)
class Session:
    """A tutorial session lock: ``group`` (None: everyone) may only start ``tag`` in the window."""

    name: str
    tag: str
    group: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    opened_by: str = ""
    opened_at: dt.datetime | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _SESSION_NAME.match(self.name):
            raise PolicyError(
                f"session name {self.name!r}: 1-80 letters, digits, spaces or . : @ ( ) + - _ (starting with a letter or digit)"
            )
        check_tag(self.tag)
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise PolicyError("group must be a hub group name, or omitted for everyone")
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))
        object.__setattr__(self, "opened_at", utc(self.opened_at))
        if self.start and self.end and self.end <= self.start:
            raise PolicyError(f"session {self.name!r}: end {self.end.isoformat()} is not after start {self.start.isoformat()}")

    def status(self, now: dt.datetime) -> str:
        """``scheduled``, ``active`` or ``ended`` at ``now``."""
        now = utc(now)
        if self.start and now < self.start:
            return "scheduled"
        if self.end and now >= self.end:
            return "ended"
        return "active"

    def applies_to(self, groups, now: dt.datetime) -> bool:
        return self.status(now) == "active" and (self.group is None or self.group in groups)

    @property
    def reason(self) -> str:
        return f"session {self.name!r}"

    def to_json(self) -> dict:
        return {"name": self.name, "tag": self.tag, "group": self.group, "start": _iso(self.start),
                "end": _iso(self.end), "opened_by": self.opened_by, "opened_at": _iso(self.opened_at)}

    @classmethod
    def from_json(cls, data) -> "Session":
        """A stored session, checked strictly: a wrong type or unknown key is a PolicyError."""
        if not isinstance(data, dict):
            raise PolicyError(f"a session must be an object, not {type(data).__name__}")
        unknown = sorted(set(data) - _SESSION_KEYS)
        if unknown:
            raise PolicyError(f"unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(_SESSION_KEYS))}")
        for key in ("name", "tag"):
            if not isinstance(data.get(key), str):
                raise PolicyError(f"{key} must be a string, not {_kind(data.get(key))}")
        for key in ("group", "start", "end", "opened_at"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise PolicyError(f"{key} must be a string or null, not {_kind(data[key])}")
        if not isinstance(data.get("opened_by", ""), str):
            raise PolicyError(f"opened_by must be a string, not {_kind(data['opened_by'])}")
        return cls(name=data["name"], tag=data["tag"], group=data.get("group"),
                   start=parse_time(data.get("start")), end=parse_time(data.get("end")),
                   opened_by=data.get("opened_by", ""), opened_at=parse_time(data.get("opened_at")))


@dataclass(frozen=True)
class Policy:
    """Hidden tags, the recommended override (None: the configured one) and the sessions."""

    hidden: frozenset[str] = frozenset()
    recommended: str | None = None
    sessions: tuple[Session, ...] = ()

    def session(self, name: str) -> Session | None:
        return next((s for s in self.sessions if s.name == name), None)

    def to_json(self) -> dict:
        return {"version": STATE_VERSION, "hidden": sorted(self.hidden), "recommended": self.recommended,
                "sessions": [s.to_json() for s in self.sessions]}

    @classmethod
    def from_json(cls, data) -> "Policy":
        """The stored policy, checked against its schema; any violation is a PolicyError naming it.

        Missing keys are allowed (an older or empty file); a wrong type, an unknown key (a typo such
        as ``sesions`` would otherwise drop every lock), a bad tag or time, two sessions of one name
        and a newer version are not.
        """
        if not isinstance(data, dict):
            raise PolicyError(f"the top level must be a JSON object, not {_kind(data)}")
        unknown = sorted(set(data) - _POLICY_KEYS)
        if unknown:
            raise PolicyError(f"unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(_POLICY_KEYS))}")
        version = data.get("version", STATE_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise PolicyError(f"version must be an integer, not {_kind(version)}")
        if version > STATE_VERSION:
            raise PolicyError(f"policy state version {version} is newer than this stackhub ({STATE_VERSION})")
        hidden = data.get("hidden") or []
        if not isinstance(hidden, list):
            raise PolicyError(f"hidden must be a list of tags, not {_kind(hidden)}")
        for i, tag in enumerate(hidden):
            _at(f"hidden[{i}]", check_tag, tag)
        recommended = data.get("recommended")
        if recommended is not None:
            _at("recommended", check_tag, recommended)
        sessions = data.get("sessions") or []
        if not isinstance(sessions, list):
            raise PolicyError(f"sessions must be a list, not {_kind(sessions)}")
        parsed = tuple(_at(f"sessions[{i}]", Session.from_json, s) for i, s in enumerate(sessions))
        names = [s.name for s in parsed]
        if len(set(names)) != len(names):
            raise PolicyError(f"sessions: a name is used twice ({', '.join(sorted(names))})")
        return cls(hidden=frozenset(hidden), recommended=recommended, sessions=parsed)


_POLICY_KEYS = {"version", "hidden", "recommended", "sessions"}
_SESSION_KEYS = {"name", "tag", "group", "start", "end", "opened_by", "opened_at"}


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _at(where: str, fn, value):
    """``fn(value)``, a PolicyError prefixed with where in the file it happened."""
    try:
        return fn(value)
    except PolicyError as e:
        raise PolicyError(f"{where}: {e}") from None


# --- evaluation ---------------------------------------------------------------------------------


def session_for(policy: Policy, groups, now: dt.datetime) -> Session | None:
    """The session that locks a (non-admin) user in ``groups`` at ``now``, if any."""
    groups = set(groups)
    live = [s for s in policy.sessions if s.applies_to(groups, now)]
    if not live:
        return None
    floor = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return max(live, key=lambda s: (s.group is not None, s.start or floor, s.opened_at or floor))


def restriction(policy: Policy, *, user: str, groups, is_admin: bool, now: dt.datetime) -> Restriction:
    """What ``user`` may start now. Admins: only the recommended override, never a lock."""
    if is_admin:
        return Restriction(recommended=policy.recommended)
    lock = session_for(policy, groups, now)
    if lock is not None:
        return Restriction(only=lock.tag, reason=lock.reason, recommended=policy.recommended)
    return Restriction(hidden=policy.hidden, recommended=policy.recommended)


# --- changes (each returns a new Policy, or raises PolicyError) ----------------------------------


def hide(policy: Policy, tag: str, *, effective_recommended: str | None) -> Policy:
    check_tag(tag)
    if tag == effective_recommended:
        raise PolicyConflict(f"{tag} is the recommended tag; recommend another tag before hiding it")
    return dataclasses.replace(policy, hidden=policy.hidden | {tag})


def show(policy: Policy, tag: str) -> Policy:
    check_tag(tag)
    return dataclasses.replace(policy, hidden=policy.hidden - {tag})


def recommend(policy: Policy, tag: str | None, *, known: list[str]) -> Policy:
    """Point ``recommended`` at ``tag`` (a tag in the catalog), or back to the config with None."""
    if tag is not None:
        check_tag(tag)
        if tag not in known:
            raise PolicyError(f"no stack image for {tag!r}; known tags: {', '.join(known) or '(none)'}")
        if tag in policy.hidden:
            raise PolicyConflict(f"{tag} is hidden; show it before recommending it")
    return dataclasses.replace(policy, recommended=tag)


def open_session(policy: Policy, session: Session, *, known: list[str]) -> Policy:
    """Add a session, or replace the one of the same name (to change its tag, group or times)."""
    if session.tag not in known:
        raise PolicyError(f"no stack image for {session.tag!r}; known tags: {', '.join(known) or '(none)'}")
    others = tuple(s for s in policy.sessions if s.name != session.name)
    return dataclasses.replace(policy, sessions=others + (session,))


def close_session(policy: Policy, name: str) -> Policy:
    if policy.session(name) is None:
        names = ", ".join(s.name for s in policy.sessions) or "(none)"
        raise PolicyError(f"no session {name!r}; sessions: {names}")
    return dataclasses.replace(policy, sessions=tuple(s for s in policy.sessions if s.name != name))


@dataclass(frozen=True)
class AuditEntry:
    """One change: when, who (user name or ``service:<name>``), what, and the details."""

    at: dt.datetime
    who: str
    action: str
    detail: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"at": self.at.isoformat(), "who": self.who, "action": self.action, "detail": self.detail}


REPAIR_HINT = ("an admin must fix it on the sessions page (/services/stackhub-sessions/) "
               "or with `stackhub session repair`")


class PolicyUnavailable(Exception):
    """The policy file cannot be used and there is no last good policy to enforce instead."""

    def __init__(self, problem: str):
        super().__init__(f"the session policy is unreadable ({problem}); {REPAIR_HINT}")
        self.problem = problem
