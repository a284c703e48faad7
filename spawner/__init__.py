"""stackhub: JupyterHub serving the LSST science stack, one container per person.

Layers, each folder with one rule (tests/unit/test_layers.py holds them):

- ``core/``: pure (config model, names, tags, catalog, policy, options, specs, disk rules);
  imports nothing outside ``core/`` and does no I/O;
- ``backends/``: turn a ServerSpec into engine objects and read the engine; import ``core/`` only.
  ``base.py`` is every backend's spawner half (form, options to spec, progress) and the ``Engine``
  the services use; each ``<type>/`` has a pure ``objects.py``, its ``spawner.py`` and ``engine.py``;
- ``courses/``: publishing and the in-container sync; import ``core/`` only;
- ``hub/``: JupyterHub wiring, logins, the stores the hub keeps; ``core/`` and ``backends/``;
- ``services/``: the hub-managed services; everything above but never ``deploy/``, ``build/``, ``cli/``,
  and no engine SDK: ``spawner.backends.engine_for(cfg)`` gives them exec, catalog and volume sizes;
- ``deploy/``, ``build/``, ``cli/``: the operator's host only, never in the hub image.
"""
