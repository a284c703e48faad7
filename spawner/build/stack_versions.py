"""Which LSST package versions make up a stack tag.

LSST publishes its Python packages on PyPI with the stack build encoded in the version:
``30.2026.4300`` is weekly ``w_2026_43`` (MAJOR.YYYY.WW00), ``30.0.1`` is release ``v30_0_1``.
Packages are not all published every week, so each one resolves to its own newest version not
later than the tag:

- weekly ``w_YYYY_WW``: the newest weekly version whose (year, week) is <= the tag's;
- daily ``d_YYYY_MM_DD``: as the weekly of that date's ISO week (PyPI carries no dailies);
- release ``vX_Y_Z``: the newest final release <= X.Y.Z, where a release candidate of exactly
  X.Y.Z also counts (some packages reached PyPI for a release only as ``X.Y.ZrcN``);
- release candidate ``vX_Y_Z_rcN``: the newest final release < X.Y.Z or ``X.Y.ZrcM`` with M <= N.

:func:`resolve` is pure (tag + published versions in, pins out); :func:`fetch_versions` is the thin
PyPI edge.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping

from packaging.version import InvalidVersion, Version

from spawner.core.tags import StackTag, TagClass, TagError, parse_tag

# The lsst_distrib packages that are pip-installable, installed in every stack image.
PACKAGES: tuple[str, ...] = (
    "lsst-utils",
    "lsst-resources",
    "lsst-sphgeom",
    "lsst-pex-config",
    "lsst-daf-relation",
    "lsst-daf-butler",
    "lsst-pipe-base",
    "lsst-ctrl-mpexec",
    "lsst-ctrl-bps",
    "lsst-felis",
)

_WEEKLY_VERSION = re.compile(r"^(\d+)\.(\d{4})\.(\d{1,2})00$")

CA_OPTION_HINT = (
    "if a TLS-intercepting proxy sits in between, pass its CA bundle: "
    "`make images CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt` "
    "(or `python -m spawner.build.images build --ca-bundle PATH`)"
)


class UnbuildableTag(ValueError):
    """A tag whose packages cannot all be resolved; ``buildable`` names tags that can be built."""

    def __init__(self, tag: str, reason: str, buildable: list[str]):
        self.tag = tag
        self.buildable = buildable
        super().__init__(f"cannot build {tag!r}: {reason}. Buildable tags: {summarize(buildable)}")


class PyPIUnavailable(RuntimeError):
    """PyPI could not be asked (network down, certificate refused, bad answer)."""


def weekly_of(version: str) -> tuple[int, int] | None:
    """(year, week) of a weekly version such as ``30.2026.4300``; None for anything else."""
    m = _WEEKLY_VERSION.match(version)
    if not m:
        return None
    year, week = int(m[2]), int(m[3])
    return (year, week) if 1 <= week <= 53 else None


def _release(version: str) -> Version | None:
    """A parsed non-weekly version (final or pre-release), None for weeklies and junk."""
    if weekly_of(version):
        return None
    try:
        v = Version(version)
    except InvalidVersion:
        return None
    if v.is_devrelease or v.is_postrelease or v.local or len(v.release) != 3:
        return None
    if v.release[1] >= 1000:  # a year: some other dated scheme, not a release
        return None
    return v


def _weekly_key(tag: StackTag) -> tuple[int, int]:
    if tag.tag_class is TagClass.WEEKLY:
        year, week = (int(x) for x in tag.name[2:].split("_"))
        return (year, week)
    y, mo, d = (int(x) for x in tag.name[2:].split("_"))
    iso = datetime.date(y, mo, d).isocalendar()
    return (iso.year, iso.week)


def _release_bounds(tag: StackTag) -> tuple[Version, int | None]:
    parts = tag.name[1:].split("_")
    target = Version(".".join(parts[:3]))
    rc = int(parts[3][2:]) if len(parts) > 3 else None
    return target, rc


def pick_version(tag: str | StackTag, versions: Iterable[str]) -> str | None:
    """The newest of ``versions`` not later than ``tag``; None when there is none."""
    t = parse_tag(tag) if isinstance(tag, str) else tag
    if t.tag_class in (TagClass.WEEKLY, TagClass.DAILY):
        limit = _weekly_key(t)
        weeklies = [(weekly_of(v), v) for v in versions]
        ok = [(k, v) for k, v in weeklies if k is not None and k <= limit]
        return max(ok)[1] if ok else None
    if t.tag_class is TagClass.RELEASE:
        target, rc = _release_bounds(t)
        ok = []
        for v in versions:
            pv = _release(v)
            if pv is None:
                continue
            if pv.pre is None and (pv < target or (rc is None and pv == target)):
                ok.append((pv, v))
            elif pv.pre is not None and pv.pre[0] == "rc" and pv.release == target.release:
                if rc is None or pv.pre[1] <= rc:
                    ok.append((pv, v))
        return max(ok)[1] if ok else None
    return None


def _published_tags(versions: Mapping[str, Iterable[str]]) -> set[str]:
    """Tags that at least one package was published as (a weekly or a final release)."""
    names = set()
    for vs in versions.values():
        for v in vs:
            if wk := weekly_of(v):
                names.add(f"w_{wk[0]}_{wk[1]:02d}")
            elif (pv := _release(v)) is not None and pv.pre is None:
                names.add("v{}_{}_{}".format(*pv.release))
    return names


def buildable_tags(versions: Mapping[str, Iterable[str]]) -> list[str]:
    """Every published tag for which all packages resolve, newest first within weekly/release."""
    good = [t for t in _published_tags(versions) if _resolve_all(t, versions)[1] == []]
    return [t.name for t in sorted((parse_tag(n) for n in good), key=lambda t: (t.tag_class != TagClass.WEEKLY, t.sort_key))]


def summarize(tags: list[str], limit: int = 8) -> str:
    """A short human list: the newest few weeklies and releases, with a count of the rest."""
    if not tags:
        return "none"
    weeklies = [t for t in tags if t.startswith("w_")]
    releases = [t for t in tags if t.startswith("v")]
    shown = weeklies[:limit] + releases[: max(3, limit // 2)]
    rest = len(tags) - len(shown)
    return ", ".join(shown) + (f" (and {rest} older)" if rest > 0 else "")


def _resolve_all(tag: str, versions: Mapping[str, Iterable[str]]) -> tuple[dict[str, str], list[str]]:
    pins, missing = {}, []
    for name, vs in versions.items():
        v = pick_version(tag, vs)
        if v is None:
            missing.append(name)
        else:
            pins[name] = v
    return pins, missing


def resolve(tag: str, versions: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Pin every package of ``versions`` ({package: [published versions]}) for ``tag``.

    Raises :class:`UnbuildableTag` (naming the buildable tags) when the tag is not a weekly,
    daily or release, when no package was ever published as that tag, or when some package has
    no version not later than it.
    """
    try:
        t = parse_tag(tag)
    except TagError as e:
        raise UnbuildableTag(tag, str(e), buildable_tags(versions)) from None
    if t.tag_class not in (TagClass.WEEKLY, TagClass.DAILY, TagClass.RELEASE):
        raise UnbuildableTag(
            tag, f"a {t.tag_class.value} tag has no package versions to resolve", buildable_tags(versions)
        )
    if t.tag_class is not TagClass.DAILY and tag not in _published_tags(versions):
        raise UnbuildableTag(tag, "no LSST package was published as that tag", buildable_tags(versions))
    if t.tag_class is TagClass.DAILY and not any(weekly_of(v) == _weekly_key(t) for vs in versions.values() for v in vs):
        raise UnbuildableTag(tag, "no weekly was published in that date's week", buildable_tags(versions))
    pins, missing = _resolve_all(tag, versions)
    if missing:
        raise UnbuildableTag(tag, "no version not later than it for " + ", ".join(sorted(missing)), buildable_tags(versions))
    return pins


# --- the PyPI edge --------------------------------------------------------------------------


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    cafile = ca_bundle or os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


def fetch_versions(
    packages: Iterable[str] = PACKAGES,
    *,
    ca_bundle: str | None = None,
    index: str = "https://pypi.org/pypi",
    python: str = "3.13",
    timeout: float = 30,
) -> dict[str, list[str]]:
    """{package: [versions]} from PyPI's JSON API, keeping versions installable on ``python``.

    A version counts when it has a file whose Requires-Python admits ``python`` and that is a pure
    wheel or a manylinux x86_64 wheel for that CPython (no compiler in the images).
    """
    ctx = _ssl_context(ca_bundle)
    out = {}
    for name in packages:
        url = f"{index}/{name}/json"
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
                data = json.load(resp)
        except urllib.error.URLError as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLError) or "CERTIFICATE" in str(reason).upper():
                raise PyPIUnavailable(f"PyPI refused our TLS check ({reason}) at {url}; {CA_OPTION_HINT}") from None
            raise PyPIUnavailable(f"PyPI is unreachable ({reason}) at {url}; check the network, or {CA_OPTION_HINT}") from None
        except (OSError, ValueError) as e:
            raise PyPIUnavailable(f"PyPI gave no usable answer for {name} ({e}); {CA_OPTION_HINT}") from None
        out[name] = installable_versions(data.get("releases", {}), python)
    return out


def installable_versions(releases: Mapping[str, list[dict]], python: str) -> list[str]:
    """Versions of a PyPI ``releases`` map that have a usable, non-yanked file for ``python``."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    cp = "cp" + python.replace(".", "")
    pyv = Version(python)
    keep = []
    for version, files in releases.items():
        for f in files:
            if f.get("yanked"):
                continue
            spec = f.get("requires_python")
            try:
                if spec and pyv not in SpecifierSet(spec):
                    continue
            except InvalidSpecifier:
                pass
            fn = f.get("filename", "")
            if fn.endswith("-none-any.whl") or (f"-{cp}-" in fn and "manylinux" in fn and "x86_64" in fn):
                keep.append(version)
                break
    return keep
