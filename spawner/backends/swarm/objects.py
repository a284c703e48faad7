"""ServerSpec -> the Swarm service of one user's server, in the Engine API's own shape. Pure.

``LSSTSwarmSpawner.create_object`` hands the result to ``create_service`` unchanged. The API's shape
(not docker-py's ``ContainerSpec`` keywords) is built because docker-py 7.1 has no keywords for
some of what the hardening needs (``Ulimits``, ``Limits.Pids``, API 1.41), and because the golden
file (tests/unit/golden/swarm_service_*.json) then shows exactly what the engine is sent.

What Swarm (API 1.41, Docker 20.10) cannot carry of ``Hardening``: ``no-new-privileges`` (a
service has no security options before API 1.46). A tmpfs mount takes only its size and mode;
Docker mounts it ``nosuid,nodev,noexec`` (one more than on a single host: nothing runs from /tmp).
docs/swarm.md lists the differences.
"""

from __future__ import annotations

import re

from spawner.core import names
from spawner.core.config import SwarmBackend, VolumeDriver, memory_bytes
from spawner.core.specs import HOME_MOUNT, Hardening, LogLimit, MountSpec, ServerSpec

NANO = 10**9


def driver_config(driver: VolumeDriver, **fill: str) -> dict:
    """``DriverConfig`` of a volume mount, its option values filled in (``{user}``, ``{volume}``)."""
    out: dict = {"Name": driver.name}
    if driver.options:
        out["Options"] = {k: v.format(**fill) for k, v in driver.options.items()}
    return out


def volume_mount(m: MountSpec, *, driver: VolumeDriver | None, labels: dict, **fill: str) -> dict:
    mount = {"Type": m.type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
    if m.type == "volume":
        options: dict = {"Labels": dict(labels)}
        if driver is not None:
            options["DriverConfig"] = driver_config(driver, volume=m.source, **fill)
        mount["VolumeOptions"] = options
    return mount


def tmpfs_mounts(h: Hardening) -> list[dict]:
    """The tmpfs mounts (``/tmp``): Swarm takes their size and mode (Docker adds nosuid,nodev,noexec)."""
    out = []
    for target, opts in sorted(h.tmpfs.items()):
        options = dict(o.split("=", 1) for o in opts.split(",") if "=" in o)
        tmpfs: dict = {}
        if "size" in options:
            tmpfs["SizeBytes"] = memory_bytes(options["size"])
        if "mode" in options and re.fullmatch(r"[0-7]{3,4}", options["mode"]):
            tmpfs["Mode"] = int(options["mode"], 8)
        out.append({"Type": "tmpfs", "Target": target, "TmpfsOptions": tmpfs})
    return out


def mounts(spec: ServerSpec, backend: SwarmBackend, prefix: str) -> list[dict]:
    """The home (with the home driver, per-user options), data and courses (with the shared driver,
    if any) and the tmpfs. A volume a node does not have yet is made there with these labels."""
    user = spec.labels[names.LABEL_USER]
    out = []
    for m in spec.mounts:
        if m.target == HOME_MOUNT:
            labels = {**names.Deployment(prefix).labels("home"), names.LABEL_USER: user}
            out.append(volume_mount(m, driver=backend.home_volume_driver, labels=labels,
                                    user=names.escape_name(user)))
        else:
            out.append(volume_mount(m, driver=backend.shared_volume_driver, labels=names.Deployment(prefix).labels("shared"),
                                    user=""))
    return out + tmpfs_mounts(spec.hardening)


def resources(spec: ServerSpec, backend: SwarmBackend) -> dict:
    """Limits are the size; reservations a fraction of it (what the scheduler places by)."""
    limits: dict = {"Pids": spec.hardening.pids_limit}
    reservations: dict = {}
    if spec.cpu_limit:
        limits["NanoCPUs"] = int(spec.cpu_limit * NANO)
        if backend.reservation:
            reservations["NanoCPUs"] = int(spec.cpu_limit * backend.reservation * NANO)
    if spec.mem_limit:
        limits["MemoryBytes"] = memory_bytes(spec.mem_limit)
        if backend.reservation:
            reservations["MemoryBytes"] = int(memory_bytes(spec.mem_limit) * backend.reservation)
    return {"Limits": limits, "Reservations": reservations}


def log_driver(log: LogLimit | None) -> dict:
    """The task template's ``LogDriver`` (a bounded log), or nothing: the engine's default."""
    return {"LogDriver": {"Name": log.driver, "Options": dict(log.options)}} if log is not None else {}


def constraints(spec: ServerSpec, backend: SwarmBackend) -> list[str]:
    return list(backend.constraints) + list(backend.size_constraints.get(spec.labels.get("stackhub.size", ""), []))


def service(spec: ServerSpec, backend: SwarmBackend, *, prefix: str, env: dict, args: list[str]) -> dict:
    """Keyword arguments of docker-py's ``APIClient.create_service`` for ``spec``.

    ``env`` is the whole environment (JupyterHub's and the spec's, as ``Spawner.get_env`` merges
    them), ``args`` the command after the image's entrypoint. The task is never restarted by Swarm:
    a server that exits stays stopped, and the hub sees it, as on Docker.
    """
    h = spec.hardening
    container = {
        "Image": spec.image,
        "Args": list(args),
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "User": str(spec.uid),
        "Labels": dict(spec.labels),
        "Mounts": mounts(spec, backend, prefix),
        "ReadOnly": h.read_only_root,
        "CapabilityDrop": list(h.cap_drop),
        "Ulimits": [{"Name": "nofile", "Soft": h.nofile, "Hard": h.nofile}],
    }
    task = {
        "ContainerSpec": container,
        "Resources": resources(spec, backend),
        "RestartPolicy": {"Condition": "none"},
        "Placement": {"Constraints": constraints(spec, backend)},
        "Networks": [{"Target": spec.network}],
        **log_driver(h.log),
    }
    # dnsrr: the service's name resolves to its one task's address. A virtual IP would add nothing
    # for one replica and needs the kernel's IPVS, which not every host has (this CI machine lacks it)
    return {"name": spec.name, "labels": dict(spec.labels), "task_template": task,
            "endpoint_spec": {"Mode": "dnsrr"}}
