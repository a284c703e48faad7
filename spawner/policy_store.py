"""Where the tag policy lives: a JSON file in the hub's state volume, and its audit log.

``policy.json`` is written atomically (temporary file, fsync, rename) under an exclusive lock, so a
reader sees the old or the new policy, never half of one. ``policy-audit.jsonl`` gets one line per
change (who, what, when). The hub's spawner reads the file on every form and spawn through
``HubPolicy``; the read is cached by the file's identity (inode, size, mtime), so a change shows up
at the next spawn without a hub restart and costs one ``stat`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .options import Restriction
from .policy import AuditEntry, Policy, restriction

POLICY_FILE = "policy.json"
AUDIT_FILE = "policy-audit.jsonl"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class PolicyStore:
    """Read and change the policy in ``state_dir``; one instance per process."""

    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir)
        self.path = self.dir / POLICY_FILE
        self.audit_path = self.dir / AUDIT_FILE
        self._lockfile = self.dir / (POLICY_FILE + ".lock")
        self._cache: tuple[tuple, Policy] | None = None
        self._mutex = threading.Lock()

    def __deepcopy__(self, memo):
        # one store per process: traitlets deep-copies config values into every spawner, and
        # a copy would have its own lock and cache (and a lock cannot be copied at all)
        return self

    def _stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> Policy:
        """The current policy (an empty one if none was ever written)."""
        stamp = self._stamp()
        cached = self._cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if stamp is None:
            policy = Policy()
        else:
            policy = Policy.from_json(json.loads(self.path.read_text()))
        self._cache = (stamp, policy)
        return policy

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
        tmp = self.path.with_name(f".{POLICY_FILE}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(policy.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def change(self, fn: Callable[[Policy], Policy], *, who: str, action: str, detail: dict,
               now: dt.datetime | None = None) -> Policy:
        """Apply ``fn`` to the current policy, save it and log the change; PolicyError passes through."""
        with self._locked():
            self._cache = None
            new = fn(self.load())
            self._write(new)
            self._append(AuditEntry(now or now_utc(), who, action, detail))
            return new

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

    ``user`` is JupyterHub's User (name, admin, groups). A policy file that cannot be read is
    logged and treated as no policy rather than stopping every spawn.
    """

    def __init__(self, store: PolicyStore, *, clock: Callable[[], dt.datetime] = now_utc, log=None):
        self.store = store
        self.clock = clock
        self.log = log

    def load(self) -> Policy:
        try:
            return self.store.load()
        except (OSError, ValueError) as e:
            if self.log:
                self.log.error("stackhub: cannot read tag policy %s: %s", self.store.path, e)
            return Policy()

    def __deepcopy__(self, memo):
        # traitlets deep-copies config values into every spawner: all share this one store reader
        return self

    async def restriction_for(self, user) -> Restriction:
        groups = [g.name for g in getattr(user, "groups", ()) or ()]
        return restriction(self.load(), user=user.name, groups=groups, is_admin=bool(getattr(user, "admin", False)),
                           now=self.clock())
