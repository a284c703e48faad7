"""ServerSpec -> what Kubernetes is asked for: KubeSpawner's traits for one user's pod. Pure.

``LSSTKubeSpawner.apply_spec`` sets these traits and KubeSpawner builds the pod (``make_pod``)
and the home claim from them. The same ServerSpec drives the Docker container, so the image,
the mounts, the limits, the environment and the uid agree on every backend (tests/unit compare
them). Golden-tested (tests/unit/golden/kube_pod_*.json: the pod KubeSpawner makes).

What maps how:
- the home: a PersistentVolumeClaim per user named like the Docker volume (``homes.type: pvc``),
  or a subPath of one ReadWriteMany claim (``shared``); mounted at ``/home`` as on Docker, given
  to the uid by a root init container holding CAP_CHOWN only (hostPath and NFS ignore fsGroup);
- data mounts: a Docker volume name is a claim of that name, an absolute path a hostPath; both
  read-only in the volume *and* the mount when ``readOnly``;
- the size: limits as on Docker, requests a fraction of them (``guaranteeFraction``);
- the hardening: non-root, no privilege escalation, capabilities drop ALL, seccomp
  RuntimeDefault, read-only root with a memory-backed ``/tmp`` of ``tmpSize``; no service
  account token in the pod. Kubernetes has no per-pod pids or nofile limit: the kubelet's
  ``podPidsLimit`` and the runtime's defaults apply (docs/kubernetes.md).
"""

from __future__ import annotations

import hashlib
import re

from spawner.core import names
from spawner.core.config import KubernetesBackend, memory_bytes
from spawner.core.specs import HOME_MOUNT, MountSpec, ServerSpec

HOME = "home"
TMP = "tmp"
INIT_HOME = "stackhub-home-owner"
ANNOTATION_USER = "stackhub/user"  # the raw names (label values cannot hold every username)
ANNOTATION_SERVER = "stackhub/server"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_TMPFS_SIZE = re.compile(r"size=([^,]+)")


def label_value(text: str) -> str:
    """A Kubernetes label value for any username, server name or tag: the text itself when it is
    one, else its escaped form, else (too long) a hash. Labels select and inform; who a pod belongs
    to is read from its annotations and its name (``engine.KubeEngine``)."""
    for v in (text, names.escape_name(text)):
        if len(v) <= 63 and _LABEL_VALUE.match(v):
            return v
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def pod_name(spec: ServerSpec) -> str:
    return names.kube_name(spec.name)


def claim_name(spec: ServerSpec) -> str:
    """The user's home claim (pvc), or their directory on the shared claim."""
    return names.kube_name(spec.home_volume)


def quantity(size: str) -> str:
    """A Docker-style size (``2G``, binary units, as config.memory_bytes reads it) as a Kubernetes
    quantity of the same number of bytes."""
    return str(memory_bytes(size))


def pod_labels(spec: ServerSpec) -> dict:
    """The spec's labels with label-safe values (the raw user and server go in annotations)."""
    return {k: label_value(v) for k, v in spec.labels.items()}


def pod_annotations(spec: ServerSpec) -> dict:
    return {ANNOTATION_USER: spec.labels[names.LABEL_USER], ANNOTATION_SERVER: spec.labels[names.LABEL_SERVER]}


def home_volume(spec: ServerSpec, kube: KubernetesBackend) -> tuple[dict, dict]:
    """The home: (volume, mount at /home)."""
    homes = kube.homes
    if homes.type == "shared":
        volume = {"name": HOME, "persistentVolumeClaim": {"claimName": homes.shared_claim}}
        return volume, {"name": HOME, "mountPath": HOME_MOUNT, "subPath": claim_name(spec)}
    volume = {"name": HOME, "persistentVolumeClaim": {"claimName": claim_name(spec)}}
    return volume, {"name": HOME, "mountPath": HOME_MOUNT}


def shared_volume(m: MountSpec, name: str) -> tuple[dict, dict]:
    """A data or courses mount: a claim of that name, or a hostPath for an absolute source."""
    if m.type == "bind":
        volume = {"name": name, "hostPath": {"path": m.source, "type": "Directory"}}
    else:
        volume = {"name": name, "persistentVolumeClaim": {"claimName": m.source, "readOnly": m.read_only}}
    return volume, {"name": name, "mountPath": m.target, "readOnly": m.read_only}


def volumes(spec: ServerSpec, kube: KubernetesBackend) -> tuple[list[dict], list[dict]]:
    """Every volume of the pod and its mount, in the spec's order, then the tmpfs ``/tmp``."""
    vols, mounts = [], []
    n = 0
    for m in spec.mounts:
        if m.target == HOME_MOUNT and m.source == spec.home_volume:
            v, vm = home_volume(spec, kube)
        else:
            v, vm = shared_volume(m, f"data-{n}")
            n += 1
        vols.append(v)
        mounts.append(vm)
    for target, options in spec.hardening.tmpfs.items():
        size = _TMPFS_SIZE.search(options)
        empty = {"medium": "Memory", **({"sizeLimit": quantity(size.group(1))} if size else {})}
        vols.append({"name": TMP, "emptyDir": empty})
        mounts.append({"name": TMP, "mountPath": target})
    return vols, mounts


def container_security_context(spec: ServerSpec) -> dict:
    h = spec.hardening
    return {
        "runAsUser": spec.uid,
        "runAsGroup": spec.uid,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": not h.no_new_privileges,
        "privileged": False,
        "capabilities": {"drop": list(h.cap_drop)},
        "readOnlyRootFilesystem": h.read_only_root,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def home_init_container(spec: ServerSpec, kube: KubernetesBackend, image_pull_policy: str) -> dict:
    """Gives the home to the uid when it is not yet (a new hostPath or NFS claim is root's).

    Root, but with CAP_CHOWN alone, a read-only root filesystem, no escalation, and a command that
    changes only the owner of the mount point itself."""
    _, mount = home_volume(spec, kube)
    owner = f"{spec.uid}:{spec.uid}"
    return {
        "name": INIT_HOME,
        "image": spec.image,
        "imagePullPolicy": image_pull_policy,
        "command": ["sh", "-c", f'[ "$(stat -c %u:%g {HOME_MOUNT})" = "{owner}" ] || chown {owner} {HOME_MOUNT}'],
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "privileged": False,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "volumeMounts": [mount],
    }


def spawner_traits(spec: ServerSpec, kube: KubernetesBackend) -> dict:
    """KubeSpawner trait values for ``spec``. ``pod_name`` and ``pvc_name`` are set directly (they
    are computed from templates at construction; stackhub names them in one place instead)."""
    vols, mounts = volumes(spec, kube)
    fraction = kube.guarantee_fraction
    mem = memory_bytes(spec.mem_limit) if spec.mem_limit else None
    homes = kube.homes
    return {
        "image": spec.image,
        "image_pull_policy": kube.image_pull_policy,
        "pod_name": pod_name(spec),
        "pvc_name": claim_name(spec),
        "storage_pvc_ensure": homes.type == "pvc",
        "storage_capacity": homes.capacity,
        "storage_class": homes.storage_class,
        "storage_access_modes": list(homes.access_modes),
        "storage_extra_labels": {names.LABEL_ROLE: "home", names.LABEL_DEPLOYMENT: spec.labels[names.LABEL_DEPLOYMENT],
                                 names.LABEL_USER: label_value(spec.labels[names.LABEL_USER])},
        "volumes": vols,
        "volume_mounts": mounts,
        "init_containers": [home_init_container(spec, kube, kube.image_pull_policy)] if homes.init_chown else [],
        "environment": dict(spec.environment),
        "cpu_limit": spec.cpu_limit,
        "cpu_guarantee": round(spec.cpu_limit * fraction, 3) if spec.cpu_limit else None,
        "mem_limit": mem,
        "mem_guarantee": int(mem * fraction) if mem else None,
        "uid": spec.uid,
        "gid": spec.uid,
        "fs_gid": spec.uid,
        "privileged": False,
        "allow_privilege_escalation": not spec.hardening.no_new_privileges,
        "container_security_context": container_security_context(spec),
        "pod_security_context": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "automount_service_account_token": False,
        "service_account": None,
        "extra_labels": pod_labels(spec),
        "extra_annotations": pod_annotations(spec),
        "extra_pod_config": {"enableServiceLinks": False},
    }
