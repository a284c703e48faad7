"""Start or stop many users' servers at once (pre-warm), with progress.

A ``Job`` is plain data: one row per user with a state (queued, starting, ready, running, stopping,
stopped, failed) and a message. ``run_job`` drives it against the hub (``HubAPI`` or a fake with the
same methods) with at most ``concurrency`` servers starting at the same time: a slot is held until
the server is ready, not just until the hub accepted the request, so a small host is never asked to
boot a whole class at once. Jobs live in memory in the service; the page and the CLI poll them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from spawner.services.hubapi import HubError

DONE = {"ready", "running", "stopped", "not running", "failed"}
_ids = itertools.count(1)


@dataclass
class Row:
    user: str
    state: str = "queued"
    message: str = ""
    seconds: float | None = None

    def to_json(self) -> dict:
        return {"user": self.user, "state": self.state, "message": self.message,
                "seconds": None if self.seconds is None else round(self.seconds, 1)}


@dataclass
class Job:
    action: str                       # "start" or "stop"
    rows: list[Row]
    by: str
    options: dict = field(default_factory=dict)
    group: str | None = None
    concurrency: int = 3
    id: str = field(default_factory=lambda: str(next(_ids)))
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def done(self) -> bool:
        return all(r.state in DONE for r in self.rows)

    def counts(self) -> dict:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def to_json(self) -> dict:
        return {
            "id": self.id, "action": self.action, "group": self.group, "by": self.by,
            "tag": self.options.get("image_tag"), "size": self.options.get("size"),
            "concurrency": self.concurrency, "total": len(self.rows), "counts": self.counts(),
            "done": self.done, "started": self.started, "finished": self.finished,
            "seconds": round((self.finished or time.time()) - self.started, 1),
            "users": [r.to_json() for r in self.rows],
        }


async def _start_one(hub, row: Row, options: dict, timeout: float):
    t0 = time.monotonic()
    row.state = "starting"
    try:
        code = await hub.start(row.user, options)
        if code == 202:
            await hub.wait(row.user, ready=True, timeout=timeout)
        row.state = "ready"
    except HubError as e:
        if e.status == 400 and "already running" in e.message:
            row.state, row.message = "running", "was already running (stop it first to change its tag)"
        else:
            row.state, row.message = "failed", e.message
    except Exception as e:  # noqa: BLE001 - one user's failure must not end the others
        row.state, row.message = "failed", f"{type(e).__name__}: {e}"
    row.seconds = time.monotonic() - t0


async def _stop_one(hub, row: Row, timeout: float):
    t0 = time.monotonic()
    row.state = "stopping"
    try:
        code = await hub.stop(row.user)
        if code == 202:
            await hub.wait(row.user, ready=False, timeout=timeout)
        row.state = "stopped"
    except HubError as e:
        if e.status == 400 and "not running" in e.message:
            row.state = "not running"
        else:
            row.state, row.message = "failed", e.message
    except Exception as e:  # noqa: BLE001
        row.state, row.message = "failed", f"{type(e).__name__}: {e}"
    row.seconds = time.monotonic() - t0


async def run_job(hub, job: Job, *, timeout: float = 300):
    """Run every row, ``job.concurrency`` at a time; never raises (failures are in the rows)."""
    slots = asyncio.Semaphore(max(1, job.concurrency))

    async def one(row: Row):
        async with slots:
            if job.action == "start":
                await _start_one(hub, row, job.options, timeout)
            else:
                await _stop_one(hub, row, timeout)

    await asyncio.gather(*(one(r) for r in job.rows))
    job.finished = time.time()
    return job


class Jobs:
    """The service's jobs, newest last; keeps the last ``keep`` (more only while more are running)."""

    def __init__(self, hub, *, timeout: float = 300, keep: int = 50):
        self.hub = hub
        self.timeout = timeout
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()

    def submit(self, job: Job) -> Job:
        self._jobs[job.id] = job
        task = asyncio.ensure_future(run_job(self.hub, job, timeout=self.timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._prune()
        return job

    def _prune(self):
        """At most ``keep`` jobs: the oldest finished ones go first; a running job is never dropped."""
        finished = [j for j in self._jobs.values() if j.done and j.finished]
        for old in finished[:max(0, len(self._jobs) - self.keep)]:
            self._jobs.pop(old.id, None)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        self._prune()
        return list(self._jobs.values())
