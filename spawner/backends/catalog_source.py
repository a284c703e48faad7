"""Reading the tag catalog from an engine (and a registry's v2 API), cached: the I/O side of
``spawner.core.catalog``. Shared by the backends and the sessions service."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request

from spawner.core.catalog import Catalog, catalog_from_images

log = logging.getLogger(__name__)


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
