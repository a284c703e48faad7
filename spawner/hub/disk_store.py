"""The disk budget's records in the hub state directory (disk-budget.json): atomic writes, schema-checked
reads; the spawn page's notice reads them."""

import html
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from spawner.core.disk import Budget, Record, budget_of, message

log = logging.getLogger("stackhub.diskwatch")

STATE_FILE = "disk-budget.json"


MAX_STATE_BYTES = 16 * 2**20


def load_records(path: Path) -> dict[str, Record]:
    """The stored records; a bad file or record is logged and left out (never trusted whole)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        log.error("cannot read %s: %s", path, e)
        return {}
    try:
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("users"), dict):
            raise ValueError("not a version 1 disk budget file")
    except ValueError as e:
        log.error("ignoring %s: %s", path, e)
        return {}
    out = {}
    for user, rec in data["users"].items():
        try:
            out[user] = Record.from_json(rec)
        except ValueError as e:
            log.error("ignoring the record of %r in %s: %s", user, path, e)
    return out


def save_records(path: Path, records: dict[str, Record], now: float, budget: Budget):
    """Write atomically (temporary file, fsync, rename): a reader sees the old file or the new one."""
    data = {"version": 1, "checked": now, "budget": asdict(budget),
            "users": {u: asdict(r) for u, r in sorted(records.items())}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskNotices:
    """The spawner's side: the note on a user's spawn page, read from the watcher's state file."""

    def __init__(self, state_dir: Path, budget: Budget):
        self.path = Path(state_dir) / STATE_FILE
        self.budget = budget
        self._cache: tuple[float, dict[str, Record]] | None = None

    @classmethod
    def for_state(cls, state_dir: Path, cfg) -> "DiskNotices":
        """The spawner's ``disk_notices_class`` hook: one per hub process."""
        return cls(state_dir, budget_of(cfg))

    def record(self, username: str) -> Record | None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, load_records(self.path))
        return self._cache[1].get(username)

    def notice_html(self, username: str, now: float | None = None) -> str:
        rec = self.record(username)
        if rec is None or rec.status == "clear":
            return ""
        text = message(rec, self.budget, time.time() if now is None else now)
        style = "#a94442;background:#f2dede" if rec.status != "warn" else "#8a6d3b;background:#fcf8e3"
        return (f'<div class="alert" id="disk-budget" data-status="{rec.status}" style="color:{style};'
                f'padding:0.6em 1em;margin-bottom:1em;border-radius:4px">{html.escape(text)}</div>')
