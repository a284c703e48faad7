"""``stackhub-diskwatch``: each user's home has a disk budget; warn at 90 %, stop a server over it.

Docker's local volumes have no size limit (overlay2's ``--storage-opt size`` covers a container's
root filesystem only, and only on xfs with project quotas), so the budget is measured, not enforced
by the filesystem: a hub-managed service (``python -m spawner.diskwatch``) measures every home
volume every ``volumes.homeBudgetCheckSeconds`` with the engine's own accounting (``docker system
df``: the daemon sums the files' sizes; nothing here walks users' files), then

- at ``homeBudgetWarn`` of the budget: writes ``~/DISK-QUOTA-WARNING.txt`` into the user's running
  server, *as the user* (``docker exec`` with the user's uid: a home is the user's to shape, symlinks
  included, so root never writes there), and logs it;
- over the budget: stops the user's running servers through the hub API, logs why, and records it
  in ``disk-budget.json`` in the hub state directory, which the spawn page reads to tell the user;
- the user may start again to clean up: from the first check that sees the server running they
  have ``homeBudgetGraceSeconds``; if the home grows meanwhile, or is still over when that ends,
  the server is stopped again. Under the warning level the record and the file go away.

``decide`` is the whole policy and is pure; ``Watcher`` does the I/O. docs/disk.md says what a site
must add for hard guarantees (filesystem quotas, homes on their own filesystem).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from . import names

log = logging.getLogger("stackhub.diskwatch")
SERVICE_NAME = "stackhub-diskwatch"
STATE_FILE = "disk-budget.json"
WARNING_FILE = "DISK-QUOTA-WARNING.txt"
MAX_STATE_BYTES = 16 * 2**20
STATE_RESERVE = 2**30  # below this much free space where the hub's state lives, the log says so each check
EXEC_TIMEOUT = 30.0

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


# --- the messages users read -------------------------------------------------------------------------


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


# --- the policy (pure) ---------------------------------------------------------------------------------


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


# --- the state file (hub state volume) -------------------------------------------------------------------


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


# --- the watcher (I/O) ----------------------------------------------------------------------------------

# Runs in the user's container as the user: writes the notice next to the home, then renames it
# over ~/DISK-QUOTA-WARNING.txt (a rename replaces a symlink there instead of following it).
WRITE_NOTICE = ('f="$HOME/$STACKHUB_NOTICE_FILE"; t="$f.tmp-$$"; '
                'printf "%s\\n" "$STACKHUB_NOTICE" > "$t" && mv -f "$t" "$f" || { rm -f "$t"; exit 1; }')
REMOVE_NOTICE = 'rm -f "$HOME/$STACKHUB_NOTICE_FILE"'


def measure_homes(df: dict, template: str) -> dict[str, int]:
    """username -> bytes, from ``docker system df``: volumes labelled as a user's home whose name is
    the one the config gives that user (a volume merely labelled so is not counted)."""
    out = {}
    for v in df.get("Volumes") or ():
        labels = v.get("Labels") or {}
        user = labels.get(names.LABEL_USER)
        if labels.get(names.LABEL_ROLE) != "home" or not user:
            continue
        if v.get("Name") != names.home_volume_name(user, template):
            continue
        size = (v.get("UsageData") or {}).get("Size", -1)
        if isinstance(size, int) and size >= 0:
            out[user] = size
    return out


def ready_servers(users: list[dict]) -> dict[str, list[str]]:
    """username -> names of the servers that are ready (pending ones are left to the next check)."""
    out = {}
    for u in users:
        ready = [name for name, s in (u.get("servers") or {}).items() if s.get("ready") and not s.get("pending")]
        if ready:
            out[u["name"]] = sorted(ready)
    return out


@dataclass
class Watcher:
    client: object  # docker.DockerClient
    hub: object  # hubapi.HubAPI
    budget: Budget
    state_path: Path
    template: str
    uid: int
    every: float
    records: dict[str, Record] = field(default_factory=dict)

    async def _io(self, fn, *args, timeout: float = 120.0, **kw):
        return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw)),
                                      timeout)

    def _exec(self, user: str, servers: tuple[str, ...], script: str, text: str = "") -> bool:
        """Run ``script`` as the user in each of their running server containers; True if one did."""
        done = False
        for server in servers:
            try:
                c = self.client.containers.get(names.container_name(user, server))
            except Exception as e:  # noqa: BLE001 - gone, or the engine is busy: next check
                log.warning("no container for %s/%s: %s", user, server, e)
                continue
            labels = c.labels or {}
            if (labels.get(names.LABEL_ROLE) != "server" or labels.get(names.LABEL_USER) != user
                    or c.status != "running"):
                continue
            code, out = c.exec_run(["sh", "-c", script], user=str(self.uid),
                                   environment={"STACKHUB_NOTICE": text, "STACKHUB_NOTICE_FILE": WARNING_FILE})
            if code == 0:
                done = True
            else:
                log.warning("writing the disk notice into %s failed (%s): %s", c.name, code,
                            (out or b"").decode(errors="replace").strip()[-200:])
        return done

    async def _notice(self, user, servers, script, text="") -> bool:
        try:
            return await self._io(self._exec, user, servers, script, text, timeout=EXEC_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            log.warning("disk notice for %s: %s", user, e)
            return False

    async def check(self, now: float | None = None):
        now = time.time() if now is None else now
        df = await self._io(self.client.df)
        sizes = measure_homes(df, self.template)
        running = ready_servers(await self.hub.users(state="active"))
        records, actions = decide(sizes, running, self.records, self.budget, now)
        for a in actions:
            if a.kind == "warn":
                log.warning("home of %s: %s", a.user, a.message)
                if not await self._notice(a.user, a.servers, WRITE_NOTICE, a.message):
                    records[a.user] = replace(records[a.user], warned=False)  # again at the next check
            elif a.kind == "clear":
                log.info("home of %s is back under %s", a.user, human(self.budget.warn_at))
                await self._notice(a.user, a.servers, REMOVE_NOTICE)
                records.pop(a.user, None)
            elif a.kind == "stop":
                log.warning("stopping %s's servers %s: %s", a.user, ", ".join(s or "(default)" for s in a.servers),
                            a.message)
                await self._notice(a.user, a.servers, WRITE_NOTICE, a.message)
                for server in a.servers:
                    try:
                        await self.hub.stop_server(a.user, server)
                    except Exception as e:  # noqa: BLE001 - logged; the next check tries again
                        log.error("could not stop %s/%s: %s", a.user, server, e)
                        # a server still running must not pass for a restart to clean up (the grace window)
                        records.pop(a.user, None)
        self.records = records
        self._check_state_space()
        try:
            save_records(self.state_path, records, now, self.budget)
        except OSError as e:  # a full disk must not stop the watcher
            log.error("cannot write %s: %s", self.state_path, e)

    def _check_state_space(self):
        """The hub's database shares a filesystem with the homes unless the site moved it (docs/disk.md)."""
        try:
            free = shutil.disk_usage(self.state_path.parent).free
        except OSError:
            return
        if free < STATE_RESERVE:
            log.error("only %s free on the filesystem of the hub's state (%s): the hub's database may fail "
                      "to write; free space, or move hub.stateVolume to a filesystem of its own",
                      human(free), self.state_path.parent)

    async def run(self):
        self.records = load_records(self.state_path)
        log.info("home budget %s (warning at %s), checked every %ss, %ss to clean up after a stop",
                 human(self.budget.limit), human(self.budget.warn_at), self.every, self.budget.grace)
        while True:
            started = time.monotonic()
            try:
                await self.check()
            except Exception as e:  # noqa: BLE001 - an engine or hub hiccup: try again next time
                log.error("disk check failed: %s", e)
            await asyncio.sleep(max(1.0, self.every - (time.monotonic() - started)))


def main(argv=None):
    import docker

    from .hubapi import HubAPI

    p = argparse.ArgumentParser(prog="stackhub-diskwatch", description=__doc__.splitlines()[0])
    p.add_argument("--state", type=Path, required=True, help="hub state directory (disk-budget.json)")
    p.add_argument("--budget", type=int, required=True, help="bytes per home")
    p.add_argument("--warn", type=float, default=0.9)
    p.add_argument("--grace", type=float, default=1800)
    p.add_argument("--every", type=float, default=60)
    p.add_argument("--uid", type=int, default=1000)
    p.add_argument("--home-volume", default="stackhub-home-{user}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(levelname).1s %(asctime)s stackhub-diskwatch] %(message)s")
    hub = HubAPI(api_url=os.environ["JUPYTERHUB_API_URL"], token=os.environ["JUPYTERHUB_API_TOKEN"])
    watcher = Watcher(client=docker.from_env(timeout=120), hub=hub,
                      budget=Budget(args.budget, args.warn, args.grace), state_path=args.state / STATE_FILE,
                      template=args.home_volume, uid=args.uid, every=args.every)
    asyncio.run(watcher.run())


if __name__ == "__main__":
    main()
