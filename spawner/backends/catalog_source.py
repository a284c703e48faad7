"""Reading the tag catalog, cached: the I/O side of ``spawner.core.catalog``. Each backend gives
the images it sees (``list_images``); a registry's v2 API may add tags. Shared by the backends'
spawners and the sessions service."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from typing import Callable

from spawner.core.catalog import Catalog, catalog_from_images
from spawner.core.config import StackSettings

log = logging.getLogger(__name__)


def registry_tags(registry: str, repository: str, *, timeout: float = 5.0) -> list[str]:
    """Tags of ``repository`` from a registry's v2 API (``GET /v2/<repo>/tags/list``)."""
    url = f"{registry.rstrip('/')}/v2/{repository}/tags/list"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return list(json.load(resp).get("tags") or [])


class CatalogSource:
    """The catalog of ``stack.repository``, read by ``list_images()`` (Docker's image list shape:
    RepoTags, Labels) plus the registry's tags, cached for ``stack.catalog_ttl`` seconds.

    One instance is shared by all spawners of a hub; concurrent readers during a refresh wait for
    the one engine call instead of each making their own.
    """

    def __init__(self, list_images: Callable[[], list[dict]], stack: StackSettings, *, executor=None):
        self._list_images = list_images
        self._stack = stack
        self._executor = executor
        self._cached: Catalog | None = None
        self._stamp = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self):
        self._stamp = 0.0

    def _read(self) -> Catalog:
        stack = self._stack
        images = self._list_images()
        extra: list[str] = []
        if stack.registry:
            try:
                extra = registry_tags(stack.registry, stack.repository)
            except OSError as e:
                log.warning("Registry %s did not list tags of %s: %s", stack.registry, stack.repository, e)
        return catalog_from_images(images, stack.repository, recommended=stack.recommended, registry_tags=extra)

    def _fresh(self) -> bool:
        return self._cached is not None and time.monotonic() - self._stamp < self._stack.catalog_ttl

    async def get(self) -> Catalog:
        if self._fresh():
            return self._cached
        async with self._lock:
            if not self._fresh():
                loop = asyncio.get_running_loop()
                self._cached = await loop.run_in_executor(self._executor, self._read)
                self._stamp = time.monotonic()
        return self._cached
