"""``stackhub-diskwatch``: each user's home has a disk budget; warn at 90 %, stop a server over it.

Docker's local volumes have no size limit (overlay2's ``--storage-opt size`` covers a container's
root filesystem only, and only on xfs with project quotas), so the budget is measured, not enforced
by the filesystem: a hub-managed service (``python -m spawner.services.diskwatch``) measures every home
volume every ``volumes.homeBudgetCheckSeconds`` with the engine's own accounting (``docker system
df`` on Docker: the daemon sums the files' sizes; nothing here walks users' files), then

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

import asyncio
import functools
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from spawner.core import names
from spawner.core.config import config_from_env
from spawner.core.disk import WARNING_FILE, Budget, Record, budget_of, decide, human, measure_homes, ready_servers
from spawner.hub.disk_store import STATE_FILE, load_records, save_records

log = logging.getLogger("stackhub.diskwatch")
SERVICE_NAME = "stackhub-diskwatch"
STATE_RESERVE = 2**30  # below this much free space where the hub's state lives, the log says so each check
EXEC_TIMEOUT = 30.0
DF_TIMEOUT = 60.0    # seconds the engine may take to measure every volume at once (docker system df)
HOME_TIMEOUT = 30.0  # seconds one home may take to measure on its own, when that did not answer


# --- the messages users read -------------------------------------------------------------------------


# --- the policy (pure) ---------------------------------------------------------------------------------


# --- the state file (hub state volume) -------------------------------------------------------------------


# --- the watcher (I/O) ----------------------------------------------------------------------------------

# Runs in the user's container as the user: writes the notice next to the home, then renames it
# over ~/DISK-QUOTA-WARNING.txt (a rename replaces a symlink there instead of following it).
WRITE_NOTICE = ('f="$HOME/$STACKHUB_NOTICE_FILE"; t="$f.tmp-$$"; '
                'printf "%s\\n" "$STACKHUB_NOTICE" > "$t" && mv -f "$t" "$f" || { rm -f "$t"; exit 1; }')
REMOVE_NOTICE = 'rm -f "$HOME/$STACKHUB_NOTICE_FILE"'


@dataclass
class Watcher:
    engine: object  # spawner.backends.base.Engine
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
                handle = self.engine.server(user, server)  # only this user's running server
            except Exception as e:  # noqa: BLE001 - the engine is busy: next check
                log.warning("no server for %s/%s: %s", user, server, e)
                continue
            if handle is None:
                continue
            out = self.engine.exec(handle, ["sh", "-c", script], user=str(self.uid),
                                   environment={"STACKHUB_NOTICE": text, "STACKHUB_NOTICE_FILE": WARNING_FILE},
                                   timeout=EXEC_TIMEOUT / 2, max_bytes=2**16)
            if out.code == 0:
                done = True
            else:
                log.warning("writing the disk notice into %s failed (%s): %s", handle.name, out.code,
                            (out.stderr or out.stdout).decode(errors="replace").strip()[-200:])
        return done

    async def _notice(self, user, servers, script, text="") -> bool:
        try:
            return await self._io(self._exec, user, servers, script, text, timeout=EXEC_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            log.warning("disk notice for %s: %s", user, e)
            return False

    async def _sizes(self, running: dict[str, list[str]]) -> dict[str, int]:
        """username -> bytes of their home. The engine measures every volume at once; when that takes
        longer than DF_TIMEOUT (one home with millions of files holds up the daemon's walk for all),
        each running user's home is measured on its own, HOME_TIMEOUT each: a home that cannot be
        measured in time keeps its last size, and the others are still watched."""
        try:
            return measure_homes(await self._io(self.engine.volume_usage, timeout=DF_TIMEOUT), self.template)
        except NotImplementedError:
            raise  # an engine that measures no volumes measures no home either (Kubernetes)
        except Exception as e:  # noqa: BLE001 (a timeout or an engine error: measure home by home)
            log.warning("the engine did not measure the homes in %.0f s (%s); measuring each running user's "
                        "home on its own", DF_TIMEOUT, str(e) or type(e).__name__)
        sizes = {user: rec.size for user, rec in self.records.items()}
        for user in sorted(running):
            volume = names.home_volume_name(user, self.template)
            try:
                # the helper's own start and removal get a margin past the measurement's time
                size = await self._io(functools.partial(self.engine.home_size, volume, timeout=HOME_TIMEOUT),
                                      timeout=HOME_TIMEOUT + 30)
            except Exception as e:  # noqa: BLE001 (this home only)
                size, problem = None, e
            else:
                problem = "too many files to measure in time"
            if size is None:
                log.error("the home of %s could not be measured (%s); its last size counts", user, problem)
                continue
            sizes[user] = size
        return sizes

    async def check(self, now: float | None = None):
        now = time.time() if now is None else now
        running = ready_servers(await self.hub.users(state="active"))
        sizes = await self._sizes(running)
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


def main():
    """Started by the hub (spawner.hub.apply): the config comes as the hub's own, nothing as flags."""
    from spawner.backends import engine_for
    from spawner.state.paths import HubPaths
    from spawner.services.hubapi import HubAPI

    cfg = config_from_env()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(levelname).1s %(asctime)s stackhub-diskwatch] %(message)s")
    hub = HubAPI(api_url=os.environ["JUPYTERHUB_API_URL"], token=os.environ["JUPYTERHUB_API_TOKEN"])
    v = cfg.volumes
    watcher = Watcher(engine=engine_for(cfg), hub=hub, budget=budget_of(cfg),
                      state_path=HubPaths.from_env().state / STATE_FILE, template=v.home_volume,
                      uid=cfg.spawner.uid, every=v.home_budget_check_seconds)
    asyncio.run(watcher.run())

if __name__ == "__main__":
    main()
