"""Stack tags: what a tag name means, and the catalog of tags the engine (or a registry) holds.

LSST names its stack builds by tag: ``w_2026_43`` (weekly), ``v30_0_0`` (release, ``rc`` suffixes
allowed), ``d_2026_11_26`` (daily), ``exp_*`` (experimental) and the alias ``recommended``. The menu
groups and orders tags by that class, newest first, so parsing lives here once and everyone
(image builds, spawn form, validation) uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum


class TagClass(str, Enum):
    """Classes in the order the spawn form shows them."""

    ALIAS = "alias"
    RELEASE = "release"
    WEEKLY = "weekly"
    DAILY = "daily"
    EXPERIMENTAL = "experimental"


RECOMMENDED = "recommended"

_WEEKLY = re.compile(r"^w_(\d{4})_(\d{2})$")
_DAILY = re.compile(r"^d_(\d{4})_(\d{2})_(\d{2})$")
_RELEASE = re.compile(r"^v(\d+)_(\d+)_(\d+)(?:_rc(\d+))?$")
_EXPERIMENTAL = re.compile(r"^exp_[A-Za-z0-9_.-]+$")
# Docker's own rule for a tag: what we accept for anything else.
_DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class TagError(ValueError):
    """A tag name that is not a valid stack tag."""


@dataclass(frozen=True, order=False)
class StackTag:
    """A parsed stack tag. ``sort_key`` orders tags of one class newest first when sorted ascending."""

    name: str
    tag_class: TagClass
    sort_key: tuple = field(compare=False)
    display: str = field(compare=False, default="")


def parse_tag(name: str) -> StackTag:
    """Parse a tag name into its class and ordering; raise TagError for names Docker would refuse."""
    if name == RECOMMENDED:
        return StackTag(name, TagClass.ALIAS, (0,), "Recommended")
    if m := _WEEKLY.match(name):
        year, week = int(m[1]), int(m[2])
        return StackTag(name, TagClass.WEEKLY, (-year, -week), f"Weekly {year}_{week:02d}")
    if m := _DAILY.match(name):
        y, mo, d = (int(x) for x in m.groups())
        return StackTag(name, TagClass.DAILY, (-y, -mo, -d), f"Daily {y}_{mo:02d}_{d:02d}")
    if m := _RELEASE.match(name):
        major, minor, patch = int(m[1]), int(m[2]), int(m[3])
        # a final release sorts before its release candidates
        rc = -int(m[4]) if m[4] else 1
        label = f"Release r{major}.{minor}.{patch}" + (f" rc{m[4]}" if m[4] else "")
        return StackTag(name, TagClass.RELEASE, (-major, -minor, -patch, -rc), label)
    if _EXPERIMENTAL.match(name):
        return StackTag(name, TagClass.EXPERIMENTAL, (name,), f"Experimental {name[4:]}")
    if _DOCKER_TAG.match(name):
        return StackTag(name, TagClass.EXPERIMENTAL, (name,), name)
    raise TagError(
        f"{name!r} is not a stack tag: expected w_YYYY_WW, v<major>_<minor>_<patch>, d_YYYY_MM_DD, "
        f"exp_<name> or {RECOMMENDED!r}"
    )


def sort_tags(names) -> list[StackTag]:
    """Tags ordered as the menu shows them: by class, newest first within a class."""
    order = list(TagClass)
    parsed = [parse_tag(n) for n in names]
    return sorted(parsed, key=lambda t: (order.index(t.tag_class), t.sort_key))
