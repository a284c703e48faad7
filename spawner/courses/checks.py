"""The course x tag check, as data: what to run, how to read what it says, where results are kept.

An instructor asks the course service to check a published course on some stack tags. For each
tag the service runs ``stackhub-course-check`` (``check_run``) in a throwaway container of that
tag (``check_container``: the attendees' uid, an empty home, ``/data`` and the courses read-only,
no network by default, no capabilities, a deadline), reads its JSON lines (``TagRun``) and keeps
the result per course version and tag (``CheckStore``). A new version, or a tag never checked,
is "not checked": results never carry over to files they were not made with.

Everything here is pure except ``CheckStore`` (one JSON file in the hub's state volume, written by
the course service, read by the sessions service for its warning).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from spawner.core.config import StackhubConfig
from spawner.core.specs import Hardening, MountSpec, course_mounts, data_mounts, log_limit
from spawner.courses import check_run
from spawner.courses.sync import TOOLS_DIR

PASSED, FAILED, TIMEOUT, ERROR = "passed", "failed", "timeout", "error"
NOT_CHECKED, QUEUED, RUNNING = "not checked", "queued", "running"
CHECK_USER = "course-check"           # the home's name in the check container
CHECK_ROLE = "course-check"           # the container's stackhub.role label
VERSIONS_KEPT = 5                     # results of this many versions are kept per course
CHECKS_FILE = "course-checks.json"   # in the hub's state volume: the course service writes, the sessions service reads
LINE_MAX = 64 * 1024                  # a longer output line is not an event of the check program


@dataclass(frozen=True)
class CheckContainer:
    """One throwaway check container, independent of the engine (a backend turns it into its own
    create call). ``deadline`` is the whole container's lifetime in seconds: the runner removes it
    then, whatever runs inside."""

    name: str
    image: str
    command: tuple[str, ...]
    uid: int
    environment: dict
    mounts: tuple[MountSpec, ...]
    labels: dict
    network: str
    memory: str
    home: str
    deadline: int
    hardening: Hardening = field(default_factory=Hardening)


def check_container(cfg: StackhubConfig, *, image: str, tag: str, course: str, version: str, job: str,
                    notebooks: int) -> CheckContainer:
    """The container that checks ``course`` at ``version`` on ``image``. Pure."""
    settings = cfg.courses
    home = f"/home/{CHECK_USER}"
    tool = f"{settings.mount_path}/{TOOLS_DIR}/{check_run.TOOL_NAME}"
    source = f"{settings.mount_path}/{course}/versions/{version}"
    # each notebook may use its cells' time; the start-up of kernels and the copy get a margin
    deadline = settings.check_timeout * max(1, notebooks) + 60
    sp = cfg.spawner
    return CheckContainer(
        name=f"{cfg.hub.prefix}-check-{job}-{tag}".replace("_", "-").lower()[:120],
        image=image,
        command=("python", tool, source, "--course", course, "--timeout", str(settings.check_timeout)),
        uid=sp.uid,
        environment={"HOME": home, "STACKHUB_USER": CHECK_USER, "JUPYTERHUB_USER": CHECK_USER, "STACKHUB_TAG": tag,
                     "STACKHUB_COURSE_SYNC_ON_START": "0", "PYTHONUNBUFFERED": "1"},
        mounts=data_mounts(cfg) + course_mounts(cfg),
        labels={"stackhub.role": CHECK_ROLE, "stackhub.deployment": cfg.hub.prefix, "stackhub.course": course,
                "stackhub.tag": tag},
        network=settings.check_network,
        memory=settings.check_memory,
        home=home,
        deadline=deadline,
        hardening=Hardening(pids_limit=sp.pids_limit, nofile=sp.nofile, read_only_root=True,
                            tmpfs={"/tmp": f"rw,nosuid,nodev,size={sp.tmp_size},mode=1777",
                                   # the empty home, owned by the attendees' uid (Docker ignores mode= here)
                                   "/home": f"rw,nosuid,nodev,exec,size={settings.check_home_size},"
                                            f"uid={sp.uid},gid={sp.uid}"},
                            log=log_limit(cfg)),
    )


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class TagRun:
    """One tag's check as it goes: fed the check program's output lines, one at a time."""

    tag: str
    image: str = ""
    state: str = QUEUED
    notebooks: list[dict] = field(default_factory=list)
    total: int | None = None
    current: str | None = None
    error: str | None = None
    seconds: float | None = None
    checked: str | None = None
    ended: bool = False

    def feed(self, line: str):
        """Take one line of output; lines that are not the program's events are ignored."""
        line = line.strip()
        if not line.startswith("{") or len(line) > LINE_MAX:
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("event")
        if kind == "begin" and isinstance(event.get("total"), int):
            self.total = event["total"]
        elif kind == "start" and isinstance(event.get("notebook"), str):
            self.current = event["notebook"]
        elif kind == "done" and isinstance(event.get("notebook"), str):
            state = event.get("state") if event.get("state") in (PASSED, FAILED, TIMEOUT) else FAILED
            row = {"notebook": event["notebook"][:200], "state": state,
                   "cell": event.get("cell") if isinstance(event.get("cell"), int) else None,
                   "error": str(event.get("error") or "")[:2000] or None,
                   "seconds": event.get("seconds") if isinstance(event.get("seconds"), (int, float)) else None}
            for key in ("source", "traceback"):
                if isinstance(event.get(key), str):
                    row[key] = event[key][:4000]
            self.notebooks.append(row)
            self.current = None
        elif kind == "error":
            self.error = str(event.get("error") or "the check program failed")[:2000]
        elif kind == "end":
            self.ended = True

    def finish(self, *, exit_code: int | None, seconds: float, stderr: str = "", timed_out: bool = False):
        """The container is gone: decide the tag's state."""
        self.seconds = round(seconds, 1)
        self.checked = now()
        if timed_out and self.current:
            self.notebooks.append({"notebook": self.current, "state": TIMEOUT, "cell": None, "seconds": None,
                                   "error": f"the check of this tag ran past its deadline ({seconds:.0f} s) and was stopped"})
            self.current = None
        if any(n["state"] in (FAILED, TIMEOUT) for n in self.notebooks):
            self.state = FAILED
        elif self.error or not self.ended or exit_code not in (0, None) or timed_out:
            self.state = ERROR
            self.error = self.error or (f"the check stopped early (exit status {exit_code}): "
                                        f"{stderr.strip()[-800:] or 'no message'}")
        elif self.total == 0:
            self.state = ERROR
            self.error = "the course has no notebooks"
        else:
            self.state = PASSED

    def to_json(self) -> dict:
        return {"tag": self.tag, "image": self.image, "state": self.state, "notebooks": list(self.notebooks),
                "total": self.total, "current": self.current, "error": self.error, "seconds": self.seconds,
                "checked": self.checked}


def failures(result: dict) -> list[dict]:
    return [n for n in result.get("notebooks", []) if n.get("state") in (FAILED, TIMEOUT)]


def describe(course: str, result: dict) -> str:
    """One line saying why a tag failed a course (for warnings and the CLI)."""
    bad = failures(result)
    if not bad:
        return f"{course} on {result.get('tag')}: {result.get('error') or result.get('state')}"
    n = bad[0]
    where = f"{n['notebook']}" + (f", cell {n['cell']}" if n.get("cell") else "")
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{course} fails on {result.get('tag')}: {where}: {n.get('error') or n['state']}{more}"


class CheckStore:
    """Results per course, version and tag: ``{course: {version: {tag: result}}}`` in one JSON file.

    Written by the course service only, replaced in one rename; the sessions service reads it. A
    file that does not parse is treated as empty (everything "not checked") and replaced at the
    next write, so a damaged file cannot take a page down.
    """

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {c: v for c, v in data.items()
                if isinstance(v, dict) and all(isinstance(t, dict) for t in v.values())}

    def results(self, course: str, version: str) -> dict[str, dict]:
        """tag -> result for this course at this version (a tag absent here is not checked)."""
        return dict(self.load().get(course, {}).get(version, {}))

    def put(self, course: str, version: str, result: dict):
        data = self.load()
        versions = data.get(course, {})
        tags = versions.pop(version, {})  # re-inserted last: the versions are kept newest-checked last
        tags[result["tag"]] = result
        versions[version] = tags
        data[course] = dict(list(versions.items())[-VERSIONS_KEPT:])
        self._write(data)

    def _write(self, data: dict):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")  # versions in the order checked
        os.replace(tmp, self.path)

    def forget(self, course: str):
        data = self.load()
        if data.pop(course, None) is not None:
            self._write(data)


def matrix(results: dict[str, dict], tags: list[str]) -> dict[str, dict]:
    """tag -> result for each of ``tags`` (a missing one is ``{"state": "not checked"}``)."""
    return {t: results.get(t) or {"tag": t, "state": NOT_CHECKED} for t in tags}


def session_warnings(published: list[tuple[str, str]], tag: str, store: CheckStore) -> list[dict]:
    """What a session locked to ``tag`` should know about the published courses.

    ``published`` is (course, current version). A course whose current version failed on ``tag``
    gives a warning (with the notebook, cell and error); one never checked on ``tag`` says so.
    """
    out = []
    data = store.load()
    for course, version in published:
        result = data.get(course, {}).get(version, {}).get(tag)
        if result is None:
            out.append({"course": course, "version": version, "tag": tag, "state": NOT_CHECKED,
                        "message": f"{course} (version {version}) was not checked on {tag}"})
        elif result.get("state") != PASSED:
            out.append({"course": course, "version": version, "tag": tag, "state": result.get("state"),
                        "message": describe(course, result)})
    return out
