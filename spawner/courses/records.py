"""What the course service keeps about users' homes, and the checks before it keeps anything. Pure.

Everything here comes from users' containers (``~/notebooks/.stackhub/status.json``, the output
of "sync now") or from the service's own file (``courses-seen.json``), which once held what
containers said. Each value is checked against the schema below before it is stored; a value that
does not fit is dropped with a reason (the caller logs it), never stored, and never turns a
later read into an error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATUS_MAX_BYTES = 64 * 1024  # a status.json larger than this is not read at all
COURSE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
USER_NAME_MAX = 255
_COURSE = re.compile(COURSE_NAME)


class SeenCourse(BaseModel):
    """The version of one course one home was last seen with."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    synced: str | None = Field(None, max_length=64)


def _why(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"


def check_courses(courses: Any, what: str) -> tuple[dict[str, dict], list[str]]:
    """``{course: {"version", "synced"}}`` from an untrusted mapping, and why anything was dropped."""
    if not isinstance(courses, dict):
        return {}, [f"{what}: not a JSON object ({type(courses).__name__}); ignored"]
    good, problems = {}, []
    for course, info in courses.items():
        if not (isinstance(course, str) and _COURSE.fullmatch(course)):
            problems.append(f"{what}: course name {str(course)[:80]!r} is not a course name; dropped")
            continue
        try:
            good[course] = SeenCourse.model_validate(info).model_dump()
        except ValidationError as e:
            problems.append(f"{what}: {course}: {_why(e)}; dropped")
    return good, problems


def parse_status(raw: bytes | None, what: str = "status.json") -> tuple[dict[str, dict], list[str]]:
    """A home's status.json as read (at most STATUS_MAX_BYTES + 1 bytes): checked courses, problems."""
    if not raw:
        return {}, []
    if len(raw) > STATUS_MAX_BYTES:
        return {}, [f"{what}: larger than {STATUS_MAX_BYTES // 1024} KiB; ignored"]
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, [f"{what}: not JSON; ignored"]
    return check_courses(data, what)


def check_seen(data: Any) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """The whole ``courses-seen.json`` (user -> courses), checked; what does not fit is dropped."""
    if not isinstance(data, dict):
        return {}, [f"courses-seen.json: not a JSON object ({type(data).__name__}); starting empty"]
    out, problems = {}, []
    for user, courses in data.items():
        if not isinstance(user, str) or not 0 < len(user) <= USER_NAME_MAX:
            problems.append(f"courses-seen.json: user {str(user)[:80]!r} is not a user name; dropped")
            continue
        good, bad = check_courses(courses, f"courses-seen.json: {user}")
        problems += bad
        if good:
            out[user] = good
    return out, problems
