"""Where the tag policy lives: a JSON file in the hub's state volume, and its audit log.

``policy.json`` is written atomically (temporary file, fsync, rename) under an exclusive lock, so a
reader sees the old or the new policy, never half of one. ``policy-audit.jsonl`` gets one line per
change (who, what, when). The hub's spawner reads the file on every form and spawn through
``HubPolicy``; the read is cached by the file's identity (inode, size, mtime), so a change shows up
at the next spawn without a hub restart and costs one ``stat`` otherwise.

Fail closed. Every policy that is read or written whole and valid is also kept as
``policy.json.last-good``. A ``policy.json`` that cannot be used (not JSON, wrong types, unknown
keys, bad tags, unreadable) never means "no policy": the last good one stays in force (from memory,
else from ``policy.json.last-good``, so a restarted hub still holds the locks), the problem is
logged at error level naming the file, and ``state()`` reports it for the sessions page. With no
last good policy at all, ``state().policy`` is None and the spawner refuses non-admin spawns (503)
until an admin repairs the file. Only an *absent* ``policy.json`` means the empty policy.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spawner.core import roles
from spawner.core.options import Restriction
from spawner.core.policy import REPAIR_HINT, AuditEntry, Policy, PolicyError, PolicyUnavailable, restriction

POLICY_FILE = "policy.json"
LAST_GOOD_FILE = POLICY_FILE + ".last-good"
REJECTED_FILE = POLICY_FILE + ".rejected"
AUDIT_FILE = "policy-audit.jsonl"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def atomic_write(path: Path, data: bytes, mode: int = 0o644):
    """Replace ``path`` with ``data`` whole: a temporary file in the same directory, fsync, rename.

    A failure at any step leaves the old file as it was and no temporary file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _dump(policy: Policy) -> bytes:
    return (json.dumps(policy.to_json(), indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class PolicyState:
    """What is enforced and why.

    ``source``: ``file`` (policy.json is good), ``absent`` (no policy.json: the empty policy),
    ``last-good`` (policy.json is bad; the last good policy is enforced) or ``none`` (bad and no
    last good policy: non-admin spawns are refused). ``problem`` names the file and what is wrong.
    """

    policy: Policy | None
    source: str
    problem: str | None = None
    last_good_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def enforcing(self) -> str:
        if self.source == "last-good":
            return (f"enforcing the last good policy (saved {self.last_good_at or 'at an unknown time'}) "
                    "until the file is repaired")
        if self.source == "none":
            return "no last good policy is known: spawns of non-admin users are refused until it is repaired"
        return "enforcing policy.json" if self.source == "file" else "no policy.json: nothing is restricted"

    def to_json(self) -> dict:
        return {"ok": self.ok, "source": self.source, "problem": self.problem, "enforcing": self.enforcing,
                "last_good_at": self.last_good_at, "repair": None if self.ok else REPAIR_HINT}


class PolicyStore:
    """Read and change the policy in ``state_dir``; one instance per process."""

    def __init__(self, state_dir: Path | str, *, log: logging.Logger | None = None):
        self.dir = Path(state_dir)
        self.path = self.dir / POLICY_FILE
        self.last_good_path = self.dir / LAST_GOOD_FILE
        self.rejected_path = self.dir / REJECTED_FILE
        self.audit_path = self.dir / AUDIT_FILE
        self.log = log or logging.getLogger("stackhub.policy")
        self._lockfile = self.dir / (POLICY_FILE + ".lock")
        self._cache: tuple[tuple | None, PolicyState] | None = None
        self._good: Policy | None = None      # the last good policy this process read or wrote
        self._reported: tuple | None = None   # the bad file's stamp already logged
        self._mutex = threading.Lock()

    @staticmethod
    def _stamp_of(path: Path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _stamp(self):
        return self._stamp_of(self.path)

    def _read(self, path: Path) -> tuple[Policy | None, str | None]:
        """(policy, None) or (None, the problem naming ``path``); a missing file is (None, None)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as e:
            return None, f"{path}: cannot read: {e.strerror or e}"
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            return None, f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"
        except json.JSONDecodeError as e:
            return None, f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        except (ValueError, RecursionError) as e:
            return None, f"{path}: not valid JSON ({e})"
        try:
            return Policy.from_json(data), None
        except PolicyError as e:
            return None, f"{path}: invalid policy: {e}"
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # a schema gap: still never fail open
            return None, f"{path}: invalid policy: {type(e).__name__}: {e}"

    def _last_good(self) -> tuple[Policy | None, str | None]:
        """The newest last good policy: the file (either process may have written it), else memory."""
        policy, problem = self._read(self.last_good_path)
        if problem:
            self.log.error("stackhub: the last good policy %s is unusable too: %s", self.last_good_path, problem)
        when = None
        if policy is not None:
            try:
                when = dt.datetime.fromtimestamp(os.stat(self.last_good_path).st_mtime, dt.timezone.utc)
                when = when.isoformat(timespec="seconds")
            except OSError:
                pass
            return policy, when
        return self._good, None

    def _remember(self, policy: Policy):
        """Keep ``policy`` as the last good one, in memory and (if it differs) on disk."""
        self._good = policy
        data = _dump(policy)
        try:
            if self.last_good_path.read_bytes() == data:
                return
        except OSError:
            pass
        try:
            atomic_write(self.last_good_path, data)
        except OSError as e:
            self.log.error("stackhub: cannot save the last good policy to %s: %s", self.last_good_path, e)

    def state(self) -> PolicyState:
        """What is enforced now (cached by the file's identity), with the problem if the file is bad."""
        stamp = self._stamp()
        cached = self._cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if stamp is None:
            state = PolicyState(Policy(), "absent")
        else:
            policy, problem = self._read(self.path)
            if policy is not None:
                state = PolicyState(policy, "file")
                if self._reported is not None:
                    self.log.warning("stackhub: the tag policy %s is readable again; enforcing it", self.path)
                    self._reported = None
                try:
                    with self._locked():
                        # re-read under the writers' lock: a change may have landed since
                        fresh, _ = self._read(self.path)
                        if fresh == policy:
                            self._remember(policy)
                except OSError as e:
                    self._good = policy
                    self.log.error("stackhub: cannot save the last good policy to %s: %s", self.last_good_path, e)
            else:
                if problem is None:  # removed between the stat and the read
                    problem = f"{self.path}: vanished while being read"
                good, when = self._last_good()
                state = PolicyState(good, "last-good" if good is not None else "none", problem, when)
                if self._reported != stamp:
                    self._reported = stamp
                    self.log.error("stackhub: the tag policy is unusable, %s; %s; %s", problem, state.enforcing,
                                   REPAIR_HINT)
        self._cache = (stamp, state)
        return state

    def load(self) -> Policy:
        """The enforced policy (the empty one if none was ever written); PolicyUnavailable if none is known."""
        state = self.state()
        if state.policy is None:
            raise PolicyUnavailable(state.problem or "unknown problem")
        return state.policy

    @contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._mutex, open(self._lockfile, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, policy: Policy):
        atomic_write(self.path, _dump(policy))
        self._remember(policy)

    def _replace_bad(self, state: PolicyState, who: str, now: dt.datetime):
        """Before a bad policy.json is overwritten: keep its bytes as policy.json.rejected and log it."""
        try:
            atomic_write(self.rejected_path, self.path.read_bytes(), 0o600)
            kept = str(self.rejected_path)
        except OSError as e:
            kept = f"not kept ({e})"
        self.log.error("stackhub: replacing the unusable tag policy %s (%s); the bad file is %s",
                       self.path, state.problem, kept)
        self._append(AuditEntry(now, who, "policy.replace-unusable", {"problem": state.problem, "kept": kept}))

    def change(self, fn: Callable[[Policy], Policy], *, who: str, action: str, detail: dict,
               now: dt.datetime | None = None) -> Policy:
        """Apply ``fn`` to the current policy, save it and log the change; PolicyError passes through."""
        now = now or now_utc()
        with self._locked():
            state = self._current()
            if state.policy is None:
                raise PolicyUnavailable(state.problem or "unknown problem")
            new = fn(state.policy)
            if not state.ok:
                self._replace_bad(state, who, now)
            self._write(new)
            self._append(AuditEntry(now, who, action, detail))
            self._cache = None
            return new

    def _current(self) -> PolicyState:
        """``state()`` read afresh, for a writer that already holds the lock."""
        if self._stamp() is None:
            return PolicyState(Policy(), "absent")
        policy, problem = self._read(self.path)
        if policy is not None:
            return PolicyState(policy, "file")
        good, when = self._last_good()
        return PolicyState(good, "last-good" if good is not None else "none",
                           problem or f"{self.path}: vanished while being read", when)

    def repair(self, *, empty: bool, who: str, now: dt.datetime | None = None) -> PolicyState:
        """Overwrite an unusable policy.json with the last good policy (or, with ``empty``, none).

        ``empty`` drops every hidden tag and session lock, so it must be asked for by name; it is
        the only way out when no last good policy exists. The bad file is kept as
        policy.json.rejected. A good file is left alone (PolicyError).
        """
        now = now or now_utc()
        with self._locked():
            state = self._current()
            if state.ok:
                raise PolicyError(f"{self.path} is fine; there is nothing to repair")
            if not empty and state.policy is None:
                raise PolicyError("there is no last good policy to restore; fix the file by hand or repair it "
                                  "with an empty policy (`stackhub session repair --empty`: no hidden tags, no locks)")
            new = Policy() if empty else state.policy
            self._replace_bad(state, who, now)
            self._write(new)
            self._append(AuditEntry(now, who, "policy.repair",
                                    {"restored": "empty" if empty else "last-good", "problem": state.problem}))
            self._cache = None
        return self.state()

    def record(self, *, who: str, action: str, detail: dict, now: dt.datetime | None = None):
        """Log an action that changes no policy (a start, a pre-warm)."""
        with self._locked():
            self._append(AuditEntry(now or now_utc(), who, action, detail))

    def _append(self, entry: AuditEntry):
        with open(self.audit_path, "a") as f:
            f.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")

    def audit(self, limit: int = 100) -> list[dict]:
        """The last ``limit`` changes, newest first."""
        try:
            lines = self.audit_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in reversed(lines[-limit:] if limit else lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class HubPolicy:
    """The spawner's ``policy``: ``restriction_for(user)`` from the stored policy.

    ``user`` is JupyterHub's User (name, admin, groups). A bad policy file never lifts a lock: the
    store enforces the last good policy; when there is none, a non-admin user's restriction raises
    PolicyUnavailable (the spawner answers 503). Admins are never restricted, so they may still
    start servers (the recommended override, unknown then, falls back to the config's).
    """

    def __init__(self, store: PolicyStore, *, clock: Callable[[], dt.datetime] = now_utc, log=None):
        self.store = store
        self.clock = clock
        self.log = log

    def state(self) -> PolicyState:
        return self.store.state()

    @classmethod
    def for_state(cls, state_dir: Path, cfg=None) -> "HubPolicy":
        """The spawner's ``policy_class`` hook: one store reader per hub process, logging to the hub's log."""
        return cls(PolicyStore(state_dir, log=logging.getLogger("JupyterHub")))

    async def restriction_for(self, user) -> Restriction:
        groups = [g.name for g in getattr(user, "groups", ()) or ()]
        is_admin = roles.is_admin(getattr(user, "admin", False), groups)
        state = self.store.state()
        if state.policy is None:
            if is_admin:
                return Restriction()
            raise PolicyUnavailable(state.problem or "unknown problem")
        return restriction(state.policy, user=user.name, groups=groups, is_admin=is_admin, now=self.clock())
