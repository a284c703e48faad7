"""Pure builders: (config, user, choice) -> what a user's server is made of. No I/O here.

The Docker spawner applies a ``ServerSpec`` to DockerSpawner's traits; the Swarm and Kubernetes
backends turn the same spec into a service or a pod. Tests compare built specs with golden files.

The home volume is mounted at ``/home`` (not ``/home/<user>``): the stack image owns ``/home`` as
its non-root user, and Docker copies that ownership into a new, empty volume. So the user's home
is writable from the first start without a root helper; the image's start script makes
``/home/<username>`` inside it. All of a user's named servers share the one volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spawner.core import names
from spawner.core.config import StackhubConfig
from spawner.core.options import Choice

HOME_MOUNT = "/home"


@dataclass(frozen=True)
class MountSpec:
    source: str
    target: str
    read_only: bool
    type: str  # "volume" or "bind"


@dataclass(frozen=True)
class ServerSpec:
    name: str
    image: str
    tag: str
    home_volume: str
    mounts: tuple[MountSpec, ...]
    environment: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    cpu_limit: float | None = None
    mem_limit: str | None = None
    network: str = "stackhub"
    uid: int = 1000
    hardening: Hardening = field(default_factory=lambda: Hardening())


@dataclass(frozen=True)
class LogLimit:
    """The log driver of a container or service and its options (a bound on what it keeps)."""

    driver: str = "json-file"
    options: dict = field(default_factory=lambda: {"max-size": "10M", "max-file": "3"})


def log_limit(config: StackhubConfig) -> LogLimit | None:
    """The configured bound on every container's log; None: the engine's own default (logs.driver engine)."""
    logs = config.logs
    return None if logs.driver == "engine" else LogLimit(logs.driver, logs.options)


def container_log_config(log: LogLimit | None) -> dict:
    """The ``log_config`` keyword of docker-py's ``containers.create``/``run`` for a bounded log
    (``LogConfig`` as a dict); empty: the engine's default."""
    return {"log_config": {"type": log.driver, "config": dict(log.options)}} if log is not None else {}


@dataclass(frozen=True)
class Hardening:
    """What a user's container may not do, the same on every backend.

    No capabilities at all (the server runs as a non-root user and needs none), no privilege gain
    through setuid files, a process limit (a fork bomb stops there), an open-files limit, and a
    read-only image with a tmpfs ``/tmp``: a user's writes go to their home and nowhere else.
    """

    cap_drop: tuple[str, ...] = ("ALL",)
    no_new_privileges: bool = True
    pids_limit: int = 2048
    nofile: int = 8192
    read_only_root: bool = True
    tmpfs: dict = field(default_factory=lambda: {"/tmp": "rw,nosuid,nodev,size=1G,mode=1777"})
    log: LogLimit | None = field(default_factory=LogLimit)



def hardening(config: StackhubConfig) -> Hardening:
    sp = config.spawner
    return Hardening(pids_limit=sp.pids_limit, nofile=sp.nofile, read_only_root=sp.read_only_root,
                     tmpfs={"/tmp": f"rw,nosuid,nodev,size={sp.tmp_size},mode=1777"}, log=log_limit(config))


def home_dir(username: str) -> str:
    return f"{HOME_MOUNT}/{username}"


def data_mounts(config: StackhubConfig) -> tuple[MountSpec, ...]:
    return tuple(
        MountSpec(m.source, m.target, m.read_only, "bind" if m.source.startswith("/") else "volume")
        for m in config.volumes.data
    )


def course_mounts(config: StackhubConfig) -> tuple[MountSpec, ...]:
    """The published courses, read-only; the start script syncs them into ~/notebooks/."""
    courses = config.courses
    return (MountSpec(courses.volume, courses.mount_path, True, "volume"),) if courses.enabled else ()


def course_environment(config: StackhubConfig) -> dict:
    courses = config.courses
    if not courses.enabled:
        return {}
    return {"STACKHUB_COURSES": courses.mount_path,
            "STACKHUB_COURSE_SYNC_ON_START": "1" if courses.sync_on_spawn else "0",
            "STACKHUB_COURSE_SYNC_SECONDS": str(courses.sync_seconds)}


def cpu_count(cpu: float) -> int:
    """The whole CPUs a server of ``cpu`` cores reports to Python (``PYTHON_CPU_COUNT``).

    Python 3.13 answers ``os.cpu_count()``/``os.process_cpu_count()`` from this variable, and dask
    sizes a notebook's ``LocalCluster()`` (workers, threads) from the latter: so a "small" server
    starts one worker, not one per host core. dask reads the CPU quota from the cgroup only where
    the v1 ``cpu`` and ``cpuacct`` controllers are mounted together (``cpu,cpuacct``), which Docker
    on a host with separate mounts does not give; memory it reads from the cgroup everywhere.
    Fractions round up (dask does the same with a quota).
    """
    return max(1, math.ceil(cpu))


def dask_gateway_enabled(config: StackhubConfig) -> bool:
    """dask-gateway runs beside the hub only on Kubernetes, when the config turns it on."""
    backend = config.spawner.backend
    return backend.type == "kubernetes" and backend.dask_gateway.enabled


def dask_gateway_environment(config: StackhubConfig, image: str) -> dict:
    """What ``from dask_gateway import Gateway; Gateway().new_cluster()`` needs in a server, where
    the deployment runs dask-gateway (Kubernetes, spawner.backend.daskGateway.enabled), else nothing.

    The client talks to Traefik in the server's namespace: HTTP for the gateway's API, TCP (TLS,
    routed by SNI) to the schedulers; it authenticates with the server's JupyterHub token. Dashboard
    links go through the hub (/services/dask-gateway/), as the server's own ones do. The cluster
    option ``image`` defaults to the server's own image, so workers run the same stack tag.
    """
    if not dask_gateway_enabled(config):
        return {}
    traefik = names.Deployment(config.hub.prefix).dask_gateway_traefik
    prefix = f"/services/{names.DASK_GATEWAY_SERVICE}"
    return {
        "DASK_GATEWAY__ADDRESS": f"http://{traefik}:{names.DASK_GATEWAY_WEB_PORT}{prefix}",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{traefik}:{names.DASK_GATEWAY_TCP_PORT}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": f"{prefix}/",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE": image,
    }


def build_server_spec(config: StackhubConfig, username: str, server_name: str, choice: Choice) -> ServerSpec:
    home_volume = names.home_volume_name(username, config.volumes.home_volume)
    mounts = (MountSpec(home_volume, HOME_MOUNT, False, "volume"),) + data_mounts(config) + course_mounts(config)
    labels = {
        names.LABEL_ROLE: "server",
        names.LABEL_DEPLOYMENT: config.hub.prefix,
        names.LABEL_USER: username,
        names.LABEL_SERVER: server_name,
        "stackhub.tag": choice.entry.name,
        "stackhub.size": choice.size.name,
    }
    environment = {
        "HOME": home_dir(username),
        "STACKHUB_USER": username,
        "STACKHUB_TAG": choice.entry.name,
        "STACKHUB_SIZE": choice.size.name,
        "CPU_LIMIT": f"{choice.size.cpu:g}",
        "MEM_LIMIT": choice.size.memory,
        "PYTHON_CPU_COUNT": str(cpu_count(choice.size.cpu)),
        **course_environment(config),
        **dask_gateway_environment(config, choice.entry.image),
    }
    return ServerSpec(
        name=names.container_name(username, server_name, config.hub.prefix),
        image=choice.entry.image,
        tag=choice.entry.name,
        home_volume=home_volume,
        mounts=mounts,
        environment=environment,
        labels=labels,
        cpu_limit=choice.size.cpu,
        mem_limit=choice.size.memory,
        network=config.hub.network,
        uid=config.spawner.uid,
        hardening=hardening(config),
    )
