"""Backends: each turns one ServerSpec into its engine's objects (``<type>/objects.py``, pure) and
gives the services an ``Engine`` (``base.Engine``). ``engine_for`` picks by ``spawner.backend.type``."""

from __future__ import annotations

import importlib


def engine_for(cfg, **kw):
    """The services' ``Engine`` for the configured backend (``spawner.backends.<type>.engine``)."""
    kind = cfg.spawner.backend.type
    module = importlib.import_module(f"spawner.backends.{kind}.engine")
    return module.make_engine(cfg, **kw)
