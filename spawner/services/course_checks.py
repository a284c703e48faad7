"""Course x tag checks in the course service: jobs that run a few tags at a time, with progress.

A ``CheckJob`` checks one course version on some tags: each tag is a ``TagRun`` (queued, running
with the notebook it is at, then passed, failed or error). At most ``courses.checkConcurrency``
check containers run at once, across all jobs, so a big check cannot fill a small host. Each
finished tag is kept at once in the ``CheckStore`` under the version it checked: the course page
and the sessions page read it from there, and a new version starts as "not checked".

The containers are run by a runner of the engine (``DockerCheckRunner`` today) in worker threads;
this module does no engine I/O itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from spawner.core.config import StackhubConfig
from spawner.courses.checks import CheckStore, RUNNING, TagRun, check_container

log = logging.getLogger("stackhub.courses")
_ids = itertools.count(1)
JOBS_KEPT = 20


@dataclass
class CheckJob:
    course: str
    version: str
    notebooks: int
    runs: list[TagRun]
    by: str
    id: str = field(default_factory=lambda: str(next(_ids)))
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None

    def to_json(self) -> dict:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.state] = counts.get(r.state, 0) + 1
        return {"id": self.id, "course": self.course, "version": self.version, "by": self.by,
                "notebooks": self.notebooks, "tags": [r.to_json() for r in self.runs], "counts": counts,
                "done": self.done, "started": self.started, "finished": self.finished,
                "seconds": round((self.finished or time.time()) - self.started, 1)}


class CheckJobs:
    """The service's check jobs (the last ``JOBS_KEPT``) and the slots they share."""

    def __init__(self, *, cfg: StackhubConfig, runner, store: CheckStore):
        self.cfg = cfg
        self.runner = runner
        self.store = store
        self.slots = asyncio.Semaphore(cfg.courses.check_concurrency)
        # blocking container runs, one thread each: never in the executor the pages use
        self.executor = ThreadPoolExecutor(cfg.courses.check_concurrency, thread_name_prefix="stackhub-check")
        self.jobs: dict[str, CheckJob] = {}
        self._tasks: set[asyncio.Task] = set()

    def submit(self, job: CheckJob, images: dict[str, str]) -> CheckJob:
        """Start ``job``; ``images`` maps each tag to the image (id) to check."""
        self.jobs[job.id] = job
        for old in [j for j in self.jobs.values() if j.done][: max(0, len(self.jobs) - JOBS_KEPT)]:
            self.jobs.pop(old.id, None)
        task = asyncio.ensure_future(self._run(job, images))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> CheckJob | None:
        return self.jobs.get(job_id)

    def all(self) -> list[CheckJob]:
        return list(self.jobs.values())

    def running_for(self, course: str, version: str) -> CheckJob | None:
        return next((j for j in self.jobs.values() if not j.done and j.course == course and j.version == version), None)

    async def _run(self, job: CheckJob, images: dict[str, str]):
        try:
            await asyncio.gather(*(self._one(job, run, images[run.tag]) for run in job.runs))
        finally:
            job.finished = time.time()
            log.info("check %s of %s %s: %s in %.0f s", job.id, job.course, job.version,
                     ", ".join(f"{r.tag} {r.state}" for r in job.runs), job.finished - job.started)

    async def _one(self, job: CheckJob, run: TagRun, image: str):
        async with self.slots:
            run.state, run.image = RUNNING, image
            spec = check_container(self.cfg, image=image, tag=run.tag, course=job.course, version=job.version,
                                   job=job.id, notebooks=job.notebooks)
            t0 = time.monotonic()
            loop = asyncio.get_running_loop()
            try:
                out = await loop.run_in_executor(self.executor, self.runner.run, spec, run.feed)
                run.finish(exit_code=out["exit_code"], seconds=time.monotonic() - t0, stderr=out["stderr"],
                           timed_out=out["timed_out"])
            except Exception as e:  # noqa: BLE001 (one tag's engine error spoils only its own cell)
                log.exception("check %s of %s on %s", job.id, job.course, run.tag)
                run.error = f"the check container could not run: {e}"[:500]
                run.finish(exit_code=None, seconds=time.monotonic() - t0)
            try:
                self.store.put(job.course, job.version, run.to_json())
            except OSError as e:
                log.error("cannot save the check result of %s on %s: %s", job.course, run.tag, e)
