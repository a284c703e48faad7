"""The host's capacity, read from the Docker engine (the edge of ``config.fit_sizes_to_host``).

The hub runs in a container, so it cannot count the host's cores itself; the engine's ``info``
(NCPU, MemTotal) is what Docker will grant a container at most. Used at hub start (and by the
sessions service for its size menu), for the docker backend only.
"""

from __future__ import annotations

import logging

from spawner.core.config import ConfigError, HostCapacity, StackhubConfig, fit_sizes_to_host

log = logging.getLogger("stackhub.host")


def engine_capacity(client=None) -> HostCapacity:
    """NCPU and MemTotal of the engine's host; ``client``: a docker APIClient (default: from the environment)."""
    if client is None:
        import docker

        client = docker.APIClient(version="auto")
    info = client.info()
    return HostCapacity(cpus=float(info["NCPU"]), memory=int(info["MemTotal"]))


def fit_to_engine(cfg: StackhubConfig, client=None, *, log=log) -> StackhubConfig:
    """``cfg`` with its sizes checked against the engine's host; ConfigError if a configured one is too large.

    Backends other than docker place servers on other machines: left alone. An engine that does not
    answer is logged and the check skipped (the spawns will say so themselves).
    """
    if cfg.spawner.backend.type != "docker":
        return cfg
    try:
        host = engine_capacity(client)
    except Exception as e:  # noqa: BLE001 - any failure to ask the engine
        log.warning("stackhub: cannot read the host's capacity from the Docker engine (%s); sizes not checked", e)
        return cfg
    cfg, dropped = fit_sizes_to_host(cfg, host)
    for problem in dropped:
        log.warning("stackhub: default %s is larger than this host (%s): not offered", problem, host.describe())
    return cfg


__all__ = ["ConfigError", "engine_capacity", "fit_to_engine"]
