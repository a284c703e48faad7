"""The catalog of stack tags: which ``stackhub/lsst-stack`` tags exist, read from image labels.

The engine is the source of truth on a single host (no registry needed): every stack image carries
labels ``stackhub.tag``, ``stackhub.class``, ``stackhub.versions`` and ``stackhub.build-date``.
When a registry is configured its v2 tags list adds tags not present locally ("older, slower to
start"). Parsing is pure (``catalog_from_images``); reading is done by ``CatalogSource`` with a
short cache so a burst of spawn forms costs one engine call, and a new image shows up without a
hub restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field

from .tags import RECOMMENDED, StackTag, TagClass, TagError, parse_tag, sort_tags

log = logging.getLogger(__name__)

LABEL_TAG = "stackhub.tag"
LABEL_CLASS = "stackhub.class"
LABEL_VERSIONS = "stackhub.versions"
LABEL_BUILD_DATE = "stackhub.build-date"


@dataclass(frozen=True)
class TagEntry:
    tag: StackTag
    image: str
    present: bool = True
    versions: dict = field(default_factory=dict, compare=False)
    build_date: str = ""

    @property
    def name(self) -> str:
        return self.tag.name


@dataclass(frozen=True)
class Catalog:
    """Tags in menu order (class, then newest first), plus what ``recommended`` stands for."""

    entries: tuple[TagEntry, ...]
    recommended: str | None

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> TagEntry | None:
        if name == RECOMMENDED:
            name = self.recommended
        return next((e for e in self.entries if e.name == name), None)

    def with_recommended(self, name: str | None) -> "Catalog":
        """This catalog with ``recommended`` pointing at ``name``, if that tag is in it."""
        if not name or name == RECOMMENDED or self.get(name) is None:
            return self
        return Catalog(self.entries, name)

    def of_class(self, cls: TagClass) -> list[TagEntry]:
        return [e for e in self.entries if e.tag.tag_class == cls]


def catalog_from_images(
    images: list[dict],
    repository: str,
    *,
    recommended: str | None,
    registry_tags: list[str] = (),
) -> Catalog:
    """Build the catalog from the engine's image list (``docker.APIClient.images()`` dicts).

    ``recommended`` is the configured tag; if it is not in the catalog the newest release (then
    the newest weekly) stands in, so the default choice always exists.
    """
    by_name: dict[str, TagEntry] = {}
    for img in images:
        labels = img.get("Labels") or {}
        for ref in img.get("RepoTags") or ():
            repo, _, tag = ref.rpartition(":")
            if repo != repository or tag == RECOMMENDED:
                continue
            try:
                parsed = parse_tag(tag)
            except TagError:
                continue
            try:
                versions = json.loads(labels.get(LABEL_VERSIONS, "{}"))
            except ValueError:
                versions = {}
            by_name[tag] = TagEntry(parsed, ref, True, versions, labels.get(LABEL_BUILD_DATE, ""))
    for tag in registry_tags:
        if tag in by_name or tag == RECOMMENDED:
            continue
        try:
            by_name[tag] = TagEntry(parse_tag(tag), f"{repository}:{tag}", present=False)
        except TagError:
            continue
    ordered = tuple(by_name[t.name] for t in sort_tags(by_name))
    if recommended not in by_name:
        fallback = [e for e in ordered if e.tag.tag_class in (TagClass.RELEASE, TagClass.WEEKLY)]
        recommended = fallback[0].name if fallback else (ordered[0].name if ordered else None)
    return Catalog(ordered, recommended)


def registry_tags(registry: str, repository: str, *, timeout: float = 5.0) -> list[str]:
    """Tags of ``repository`` from a registry's v2 API (``GET /v2/<repo>/tags/list``)."""
    url = f"{registry.rstrip('/')}/v2/{repository}/tags/list"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return list(json.load(resp).get("tags") or [])


class CatalogSource:
    """Reads the catalog from a Docker client (and registry), cached for ``ttl`` seconds.

    One instance is shared by all spawners of a hub; concurrent readers during a refresh wait for
    the one engine call instead of each making their own.
    """

    def __init__(self, *, client, repository: str, recommended: str | None, ttl: float,
                 registry: str | None = None, executor=None):
        self._client = client
        self._repository = repository
        self._recommended = recommended
        self._ttl = ttl
        self._registry = registry
        self._executor = executor
        self._cached: Catalog | None = None
        self._stamp = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self):
        self._stamp = 0.0

    def _read(self) -> Catalog:
        images = self._client.images(name=self._repository)
        extra: list[str] = []
        if self._registry:
            try:
                extra = registry_tags(self._registry, self._repository)
            except OSError as e:
                log.warning("Registry %s did not list tags of %s: %s", self._registry, self._repository, e)
        return catalog_from_images(images, self._repository, recommended=self._recommended, registry_tags=extra)

    async def get(self) -> Catalog:
        if self._cached is not None and time.monotonic() - self._stamp < self._ttl:
            return self._cached
        async with self._lock:
            if self._cached is None or time.monotonic() - self._stamp >= self._ttl:
                loop = asyncio.get_running_loop()
                self._cached = await loop.run_in_executor(self._executor, self._read)
                self._stamp = time.monotonic()
        return self._cached
