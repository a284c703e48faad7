"""ServerSpec -> what Docker is asked for: DockerSpawner's traits for one user's server. Pure.

The spawner sets these traits (``LSSTDockerSpawner.apply_spec``); DockerSpawner turns them into the
container's create and host config. Golden-tested (tests/unit/golden/docker_server_*.json), so a
change in what a user's container is made of shows in review.
"""

from __future__ import annotations

from spawner.core.specs import Hardening, MountSpec, ServerSpec, container_log_config


def mount(m: MountSpec) -> dict:
    """Keyword arguments of ``docker.types.Mount``."""
    return {"source": m.source, "target": m.target, "read_only": m.read_only, "type": m.type}


def host_config(h: Hardening) -> dict:
    """Keyword arguments of docker-py's ``create_host_config`` for the hardening.

    ``auto_remove`` is off (DockerSpawner turns it on with ``remove``): a container that dies must
    stay until the spawner has read why (out of memory, exit code, last log lines); the spawner's
    stop removes it, and stackhub-orphans one the hub never saw."""
    return {
        "auto_remove": False,
        "cap_drop": list(h.cap_drop),
        "security_opt": ["no-new-privileges:true"] if h.no_new_privileges else [],
        "pids_limit": h.pids_limit,
        "ulimits": [{"name": "nofile", "soft": h.nofile, "hard": h.nofile}],
        "read_only": h.read_only_root,
        "tmpfs": dict(h.tmpfs),
        **container_log_config(h.log),
    }


def spawner_traits(spec: ServerSpec) -> dict:
    """DockerSpawner trait values for ``spec``, in the order they must be set (``image`` first: it
    re-renders ``object_name``). Named volumes come only as ``mounts``."""
    return {
        "image": spec.image,
        "object_name": spec.name,
        "mounts": [mount(m) for m in spec.mounts],
        "volumes": {},
        "read_only_volumes": {},
        "environment": dict(spec.environment),
        "cpu_limit": spec.cpu_limit,
        "mem_limit": spec.mem_limit,
        "network_name": spec.network,
        "extra_create_kwargs": {"labels": dict(spec.labels), "user": str(spec.uid)},
        "extra_host_config": host_config(spec.hardening),
    }
