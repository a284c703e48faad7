"""The catalog of stack tags: which ``stackhub/lsst-stack`` tags exist, read from image labels.

The engine is the source of truth on a single host (no registry needed): every stack image carries
labels ``stackhub.tag``, ``stackhub.class``, ``stackhub.versions`` and ``stackhub.build-date``.
When a registry is configured its v2 tags list adds tags not present locally ("older, slower to
start"). Parsing is pure (``catalog_from_images``); reading is done by
``spawner.backends.catalog_source.CatalogSource`` with a short cache so a burst of spawn forms
costs one engine call, and a new image shows up without a hub restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from spawner.core.tags import RECOMMENDED, StackTag, TagClass, TagError, parse_tag, sort_tags

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


# --- the catalog as a Kubernetes ConfigMap: written at image build time, read by the hub ---------


def catalog_configmap(name: str, images: list[dict], repository: str) -> dict:
    """A ConfigMap listing the stack images (``stackhub images catalog``): one key per tag, its
    value the image reference and labels as JSON. ``images`` are Docker's image list entries
    (``RepoTags``, ``Labels``); only ``repository``'s labelled stack images go in."""
    data = {}
    for img in images:
        labels = img.get("Labels") or {}
        for ref in img.get("RepoTags") or ():
            repo, _, tag = ref.rpartition(":")
            if repo == repository and tag != RECOMMENDED and labels.get(LABEL_TAG):
                data[tag] = json.dumps({"image": ref, "labels": labels}, sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"stackhub.role": "catalog"}},
            "data": dict(sorted(data.items()))}


def images_from_configmap(data: dict | None) -> list[dict]:
    """The ConfigMap's entries as image list entries for ``catalog_from_images``; an entry that is
    not what ``catalog_configmap`` writes is skipped (the catalog's parser then refuses bad tags)."""
    out = []
    for value in (data or {}).values():
        try:
            entry = json.loads(value)
            out.append({"RepoTags": [str(entry["image"])], "Labels": dict(entry.get("labels") or {})})
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out
