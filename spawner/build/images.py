"""Build the stackhub images: base, shared stack layer, one stack image per tag, and the hub.

    python -m spawner.build.images build [--ca-bundle PATH] [--recommended TAG] [--repository REPO] [TAGS...]
    python -m spawner.build.images build-hub [--ca-bundle PATH]
    python -m spawner.build.images resolve TAGS...          (print the pins, build nothing)
    python -m spawner.build.images export TAG --format sif|squashfs|docker-archive   (HPC, docs/hpc.md)

Layering (``images/README.md`` has the picture):

- ``stackhub/base:<suite>``: Debian, pulled where a registry answers, else debootstrap + import;
- ``stackhub/lsst-stack-base:<hash>``: Python, JupyterLab, jupyterhub-singleuser, the science
  libraries, the non-root user; named by a hash of its inputs, so it is built once and shared;
- ``stackhub/lsst-stack:<tag>``: one more layer, the LSST packages of that tag in their own prefix.

Steps that need HTTPS to PyPI or npm run in a container with the build inputs bind-mounted at
``/mnt`` (and the CA bundle among them, only when given), then ``docker commit``: bind mounts are
not committed, so the bundle never lands in a layer. Everything else uses the classic builder and
its layer cache. Nothing is tagged unless its build succeeded.

Pure parts (labels, commit changes, hashes, plans) are plain functions; Docker, debootstrap and
PyPI are touched only by the ``_docker``/``_run`` helpers and :func:`main`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spawner.build import stack_versions
from spawner.core.tags import parse_tag

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
STACK_DIR = IMAGES / "lsst-stack"
HUB_DIR = IMAGES / "hub"

DEBIAN_SUITE = "trixie"  # LSST weeklies need Python >= 3.12; trixie has 3.13
STACK_PYTHON = "3.13"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_REPO = "stackhub/base"
STACK_REPO = "stackhub/lsst-stack"
SHARED_SUFFIX = "-base"  # the shared layer of REPO is REPO-base: stackhub/lsst-stack-base
SHARED_REPO = STACK_REPO + SHARED_SUFFIX
HUB_REPO = "stackhub/hub"
GATEWAY_REPO = "stackhub/dask-gateway"
GATEWAY_DIR = IMAGES / "dask-gateway"
DEFAULT_TAGS = ("w_2026_43", "w_2026_42", "v30_0_0")
DEFAULT_RECOMMENDED = "w_2026_43"
LABEL_PREFIX = "stackhub."

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


# --- pure parts -------------------------------------------------------------------------------


def stack_labels(tag: str, pins: Mapping[str, str], build_date: datetime.date, shared: str) -> dict[str, str]:
    """The labels the spawner reads to build its menu."""
    return {
        "stackhub.image": "lsst-stack",
        "stackhub.tag": tag,
        "stackhub.class": parse_tag(tag).tag_class.value,
        "stackhub.versions": json.dumps(dict(sorted(pins.items())), separators=(",", ":")),
        "stackhub.build-date": build_date.isoformat(),
        "stackhub.shared": shared,
        "stackhub.python": STACK_PYTHON,
    }


def pins_file(pins: Mapping[str, str]) -> str:
    """requirements text pinning each package exactly."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def runtime_changes(env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> list[str]:
    """Dockerfile instructions applied at ``docker commit`` (the build container's own Cmd and
    user must not stay in the image)."""
    changes = [
        'ENTRYPOINT ["/usr/bin/tini", "-g", "--"]',
        'CMD ["stackhub-start"]',
        "USER lsst",
    ]
    changes += [f"ENV {k}={json.dumps(v)}" for k, v in (env or {}).items()]
    changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in (labels or {}).items()]
    return changes


def inputs_hash(parts: Iterable[tuple[str, bytes]]) -> str:
    """A short stable hash of named byte strings (order-independent)."""
    h = hashlib.sha256()
    for name, data in sorted(parts):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:12]


def dir_parts(root: Path, prefix: str = "") -> list[tuple[str, bytes]]:
    """(relative name, bytes) of every file under root, for :func:`inputs_hash`."""
    return [(prefix + str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def up_to_date(existing: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    """Whether an image with labels ``existing`` already is what ``wanted`` describes
    (everything but the build date equal)."""
    if existing is None:
        return False
    keys = set(wanted) - {"stackhub.build-date"}
    return all(existing.get(k) == wanted[k] for k in keys)


@dataclass(frozen=True)
class Plan:
    tags: tuple[str, ...]
    recommended: str | None


def make_plan(tags: Iterable[str], recommended: str | None) -> Plan:
    """The tags to build, deduplicated in order; the default set when none are named."""
    ordered = tuple(dict.fromkeys(tags)) or DEFAULT_TAGS
    if recommended and recommended not in ordered:
        ordered = ordered + (recommended,)
    return Plan(ordered, recommended)


def _fmt_secs(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s // 60:.0f}m{s % 60:02.0f}s"


# --- Docker and host I/O ----------------------------------------------------------------------


def _client():
    import docker

    try:
        client = docker.from_env(timeout=3600)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means: no engine
        raise BuildError(f"no Docker engine answers ({e}); start one with scripts/docker-engine.sh") from None
    return client


def _image_labels(client, ref: str) -> dict[str, str] | None:
    import docker

    try:
        return client.images.get(ref).labels or {}
    except docker.errors.ImageNotFound:
        return None


def _image_exists(client, ref: str) -> bool:
    return _image_labels(client, ref) is not None


def ensure_base(client, log: Log, suite: str = DEBIAN_SUITE) -> str:
    """``stackhub/base:<suite>``: kept if present, else pulled (debian:<suite>-slim), else bootstrapped."""
    ref = f"{BASE_REPO}:{suite}"
    if _image_exists(client, ref):
        log(f"base {ref}: present")
        return ref
    t0 = time.monotonic()
    try:
        client.images.pull("debian", tag=f"{suite}-slim")
        client.images.get(f"debian:{suite}-slim").tag(BASE_REPO, suite)
        log(f"base {ref}: pulled debian:{suite}-slim ({_fmt_secs(time.monotonic() - t0)})")
        return ref
    except Exception as e:  # noqa: BLE001 - no registry: bootstrap instead
        reason = str(e).rsplit(": ", 1)[-1].strip()[:120]
        log(f"base {ref}: no registry answers ({reason}); bootstrapping with debootstrap")
    if not shutil.which("debootstrap"):
        raise BuildError("no registry answers and debootstrap is missing (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="stackhub-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", suite, str(rootfs), DEBIAN_MIRROR], log, "debootstrap")
        # what a -slim image has: no package caches, and the security updates on the list
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN_MIRROR} {suite} main\n"
            f"deb {DEBIAN_MIRROR} {suite}-updates main\n"
            f"deb {DEBIAN_MIRROR}-security {suite}-security main\n"
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import", "-m", f"debootstrap --variant=minbase {suite}", "-c", 'CMD ["/bin/bash"]', "-", ref],
            stdin=tar.stdout, capture_output=True, text=True,
        )
        tar.wait()
        if imp.returncode or tar.returncode:
            raise BuildError(f"docker import of the bootstrapped {suite} failed: {imp.stderr.strip()}")
    log(f"base {ref}: bootstrapped and imported ({_fmt_secs(time.monotonic() - t0)})")
    return ref


def _run(cmd: list[str], log: Log, what: str) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if line.startswith(("I: Retrieving", "I: Unpacking the", "I: Configuring", "I: Base")):
            log("  " + line.rstrip())
    if proc.wait():
        raise BuildError(f"{what} failed:\n" + "\n".join(tail))


def build_dockerfile(client, log: Log, context: Path, dockerfile: str, buildargs: dict[str, str]) -> str:
    """Classic ``docker build`` with the layer cache; streams the step lines; returns the image id."""
    image_id = None
    error = None
    for chunk in client.api.build(
        path=str(context), dockerfile=dockerfile, buildargs=buildargs, rm=True, forcerm=True, decode=True
    ):
        if "stream" in chunk:
            line = chunk["stream"].rstrip()
            if line.startswith("Step ") or line.startswith(" ---> Using cache"):
                log("  " + line)
            elif line.startswith("Successfully built "):
                image_id = line.split()[-1]
        elif "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        elif "error" in chunk:
            error = chunk["error"].strip()
    if error or not image_id:
        raise BuildError(f"docker build of {context / dockerfile} failed: {error or 'no image id'}")
    return image_id


def run_and_commit(
    client,
    log: Log,
    *,
    image: str,
    script: Path,
    inputs: Mapping[str, bytes],
    ca_bundle: str | None,
    changes: list[str],
    message: str,
) -> str:
    """Run ``script`` as root in a container of ``image`` with a fresh temporary directory at
    /mnt holding the script, ``inputs`` and (if given) ``ca.pem``; commit the result.

    /mnt already exists in Debian, so the bind mount leaves no mountpoint behind, and the commit
    never contains the CA bundle. Returns the new image id; removes the container either way.
    """
    from docker.types import Mount

    with tempfile.TemporaryDirectory(prefix="stackhub-build-") as tmp:
        d = Path(tmp)
        shutil.copy(script, d / script.name)
        for name, data in inputs.items():
            (d / name).write_bytes(data)
        if ca_bundle:
            shutil.copy(ca_bundle, d / "ca.pem")
        os.chmod(d, 0o755)
        container = client.containers.create(
            image,
            command=["bash", f"/mnt/{script.name}"],
            user="root",
            entrypoint=[],
            # a mount, not `volumes=`: that would also declare VOLUME /mnt in the container's config,
            # the commit would keep it, and every container of the image would leave an anonymous volume
            mounts=[Mount(target="/mnt", source=str(d), type="bind", read_only=True)],
            network_mode="bridge",
        )
        try:
            container.start()
            tail: list[str] = []
            buf = b""
            for chunk in container.logs(stream=True, follow=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip()
                    tail = (tail + [line])[-30:]
                    if _interesting(line):
                        log("  " + line[:160])
            status = container.wait()["StatusCode"]
            if status:
                text = "\n".join(tail)
                hint = ""
                if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text or "SELF_SIGNED_CERT" in text:
                    hint = f"\nThe package index's certificate was refused; {stack_versions.CA_OPTION_HINT}"
                elif "NewConnectionError" in text or "Temporary failure in name resolution" in text:
                    hint = "\nThe package index is unreachable from the build container."
                raise BuildError(f"{message} failed (exit {status}):\n{text}{hint}")
            committed = container.commit(changes="\n".join(changes), message=message)
            return committed.id
        finally:
            container.remove(force=True)


def _interesting(line: str) -> bool:
    return line.startswith(("Collecting ", "Successfully installed", "ERROR", "error", "added ", "npm ")) or "WARNING" in line


def dockerfile_then_install(client, log: Log, *, context: Path, dockerfile: str, base: str, **install) -> str:
    """The two halves of an image: the offline Dockerfile part (cached), then the HTTPS install
    step run and committed on top of it (see :func:`run_and_commit` for ``install``)."""
    system_id = build_dockerfile(client, log, context, dockerfile, {"BASE_IMAGE": base})
    return run_and_commit(client, log, image=system_id, **install)


# --- the builds -------------------------------------------------------------------------------


def shared_ref(client, base: str, shared_repo: str = SHARED_REPO) -> str:
    """``<shared_repo>:<hash of the recipe, constraints and base image>``: the name the shared
    layer of exactly these inputs has (or will have)."""
    constraints = (REPO / "constraints.txt").read_bytes()
    base_id = client.images.get(base).id
    return f"{shared_repo}:{inputs_hash(dir_parts(STACK_DIR) + [('constraints.txt', constraints), ('base', base_id.encode())])}"


def shared_image(client, log: Log, base: str, ca_bundle: str | None, shared_repo: str = SHARED_REPO) -> str:
    """``stackhub/lsst-stack-base:<hash>``: built once per set of inputs."""
    constraints = (REPO / "constraints.txt").read_bytes()
    ref = shared_ref(client, base, shared_repo)
    digest = ref.rsplit(":", 1)[1]
    if _image_exists(client, ref):
        log(f"shared layer {ref}: present")
        return ref
    t0 = time.monotonic()
    log(f"shared layer {ref}: building (system packages, Python, JupyterLab, science libraries)")
    image_id = dockerfile_then_install(
        client, log,
        context=STACK_DIR, dockerfile="Dockerfile", base=base,
        script=STACK_DIR / "install-shared.sh",
        inputs={"constraints.txt": constraints, "requirements.txt": (STACK_DIR / "requirements-shared.txt").read_bytes()},
        ca_bundle=ca_bundle,
        changes=runtime_changes(labels={"stackhub.image": "lsst-stack-base"}),
        message="stackhub: shared layer (python, jupyterlab, science libraries)",
    )
    client.images.get(image_id).tag(shared_repo, digest)
    log(f"shared layer {ref}: built in {_fmt_secs(time.monotonic() - t0)}")
    return ref


def stale_shared(shared_refs: Iterable[str], stack_labels_seen: Iterable[Mapping[str, str]]) -> list[str]:
    """Shared-layer tags no stack image is built on any more (their inputs changed since)."""
    used = {labels.get("stackhub.shared") for labels in stack_labels_seen}
    return sorted(ref for ref in shared_refs if ref not in used)


def prune_shared(client, log: Log, repository: str = STACK_REPO) -> None:
    """Untag (and so free) shared layers left behind by earlier builds of ``repository``; kept
    while a tag uses one. Only that repository's own shared layers (``<repository>-base``)."""
    shared = [t for img in client.images.list(name=repository + SHARED_SUFFIX) for t in img.tags]
    labels = [img.labels for img in client.images.list(name=repository)]
    for ref in stale_shared(shared, labels):
        try:
            client.images.remove(ref)
            log(f"shared layer {ref}: removed (no stack tag uses it)")
        except Exception as e:  # noqa: BLE001 - pruning is housekeeping, never a build failure
            log(f"shared layer {ref}: kept ({e})")


def stack_image(client, log: Log, tag: str, pins: Mapping[str, str], shared: str, ca_bundle: str | None,
                repository: str = STACK_REPO) -> str:
    """``stackhub/lsst-stack:<tag>``; kept when an image of the same pins and shared layer exists."""
    ref = f"{repository}:{tag}"
    labels = stack_labels(tag, pins, datetime.date.today(), shared)
    if up_to_date(_image_labels(client, ref), labels):
        log(f"{ref}: up to date")
        return ref
    image_id = run_and_commit(
        client, log,
        image=shared,
        script=STACK_DIR / "install-lsst.sh",
        inputs={
            "constraints.txt": (REPO / "constraints.txt").read_bytes(),
            "pins.txt": pins_file(pins).encode(),
            "versions.json": labels["stackhub.versions"].encode(),
        },
        ca_bundle=ca_bundle,
        changes=runtime_changes(env={"STACKHUB_STACK_TAG": tag}, labels=labels),
        message=f"stackhub: lsst_distrib {tag}",
    )
    client.images.get(image_id).tag(repository, tag)
    return ref


def current_without_pypi(plan: Plan, repository: str, log: Log) -> bool:
    """Whether every tag of ``plan`` (and its ``recommended`` alias) already is an image built on
    the shared layer of the current recipe: then there is nothing to build, and no PyPI lookup is
    made. ``make up``/``make test`` build with ``--if-stale`` every time, so an engine holding images
    of an older recipe gets new ones, and an engine with current ones is not slowed or taken
    offline by a PyPI lookup. A changed recipe, constraints or base gives a new shared-layer name,
    so such images are not current and the full build (pins from PyPI) runs. Without
    ``--if-stale`` the pins are resolved again and a tag whose pins moved is rebuilt.
    """
    client = _client()
    base = f"{BASE_REPO}:{DEBIAN_SUITE}"
    if not _image_exists(client, base):
        return False
    shared = shared_ref(client, base, repository + SHARED_SUFFIX)
    seen = {tag: _image_labels(client, f"{repository}:{tag}") for tag in plan.tags}
    if not all(labels and labels.get("stackhub.shared") == shared for labels in seen.values()):
        return False
    if plan.recommended:
        alias = _image_labels(client, f"{repository}:recommended") or {}
        if alias.get("stackhub.tag") != plan.recommended or alias.get("stackhub.shared") != shared:
            return False
    log(f"{repository}: {', '.join(plan.tags)} up to date (shared layer {shared})")
    return True


def build_stacks(
    tags: Iterable[str],
    *,
    recommended: str | None = DEFAULT_RECOMMENDED,
    ca_bundle: str | None = None,
    repository: str = STACK_REPO,
    if_stale: bool = False,
    log: Log = print,
) -> list[str]:
    """Resolve every tag first (fail before building anything), then build what is missing.

    ``repository``: where the tags go (``<repository>:<tag>``, shared layer ``<repository>-base``);
    another name than the default lets a changed recipe be built and tested on an engine whose
    ``stackhub/lsst-stack`` images others are using."""
    plan = make_plan(tags, recommended)
    t_all = time.monotonic()
    if if_stale and current_without_pypi(plan, repository, log):
        return [f"{repository}:{tag}" for tag in plan.tags]
    log(f"resolving {', '.join(plan.tags)} against PyPI ...")
    versions = stack_versions.fetch_versions(ca_bundle=ca_bundle, python=STACK_PYTHON)
    pins = {tag: stack_versions.resolve(tag, versions) for tag in plan.tags}
    client = _client()
    base = ensure_base(client, log)
    shared = shared_image(client, log, base, ca_bundle, repository + SHARED_SUFFIX)
    built = []
    for i, tag in enumerate(plan.tags, 1):
        t0 = time.monotonic()
        short = ", ".join(f"{k.removeprefix('lsst-')} {v}" for k, v in sorted(pins[tag].items()))
        log(f"[{i}/{len(plan.tags)}] building {tag} ... ({short})")
        built.append(stack_image(client, log, tag, pins[tag], shared, ca_bundle, repository))
        log(f"[{i}/{len(plan.tags)}] {tag} done in {_fmt_secs(time.monotonic() - t0)}")
    prune_shared(client, log, repository)
    if plan.recommended:
        client.images.get(f"{repository}:{plan.recommended}").tag(repository, "recommended")
        log(f"{repository}:recommended -> {plan.recommended}")
    log(f"all done in {_fmt_secs(time.monotonic() - t_all)}: {', '.join(built)}")
    return built


def hub_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# what runs on the operator's host only: neither copied into the hub image (.dockerignore) nor hashed
HOST_ONLY = ("cli", "build", "deploy")


def hub_inputs(client) -> str:
    """The hash of what the hub image is made of: recipe, spawner package, config, constraints, base."""
    parts = dir_parts(HUB_DIR) + [(n, d) for n, d in dir_parts(REPO / "spawner", "spawner/")
                                  if n.split("/")[1] not in HOST_ONLY]
    parts += [("base", client.images.get(f"{BASE_REPO}:{DEBIAN_SUITE}").id.encode())]
    parts += [(n, (REPO / n).read_bytes()) for n in ("pyproject.toml", "constraints.txt", "jupyterhub_config.py") if (REPO / n).is_file()]
    return inputs_hash((n, d) for n, d in parts if "__pycache__" not in n)


def hub_checkout_ref(client=None) -> str:
    """``stackhub/hub:<version>-<inputs>``: the hub image of exactly this checkout's code.

    Test deployments run this tag, so two checkouts on one engine (or a test run beside a live
    ``make up``) never run each other's hub code through the shared ``<version>`` tag.
    """
    client = client or _client()
    return f"{HUB_REPO}:{checkout_tag(hub_inputs(client))}"


def checkout_tag(digest: str) -> str:
    return f"{hub_version()}-{digest[:12]}"


def build_hub(*, ca_bundle: str | None = None, log: Log = print) -> str:
    """``stackhub/hub:<version>`` from images/hub/Dockerfile (context: the repo root); kept when
    its inputs (the spawner package, config, constraints, recipe, base) are unchanged. Also tagged
    ``<version>-<inputs>`` (``hub_checkout_ref``)."""
    t0 = time.monotonic()
    version = hub_version()
    client = _client()
    base = ensure_base(client, log)
    ref = f"{HUB_REPO}:{version}"
    digest = hub_inputs(client)
    checkout_ref = f"{HUB_REPO}:{checkout_tag(digest)}"
    labels = _image_labels(client, checkout_ref) or {}
    if labels.get("stackhub.inputs") == digest:
        client.images.get(checkout_ref).tag(HUB_REPO, version)
        log(f"hub {ref}: up to date")
        return ref
    log(f"hub {ref}: building")
    image_id = dockerfile_then_install(
        client, log,
        context=REPO, dockerfile="images/hub/Dockerfile", base=base,
        script=HUB_DIR / "install-hub.sh",
        inputs={"constraints.txt": (REPO / "constraints.txt").read_bytes()},
        ca_bundle=ca_bundle,
        changes=[
            "WORKDIR /srv/stackhub",
            'CMD ["jupyterhub", "-f", "/srv/stackhub/jupyterhub_config.py"]',
            f'LABEL "stackhub.image"="hub" "stackhub.version"="{version}" "stackhub.inputs"="{digest}"',
        ],
        message=f"stackhub: hub {version} (pip + npm)",
    )
    client.images.get(image_id).tag(HUB_REPO, version)
    client.images.get(image_id).tag(HUB_REPO, checkout_tag(digest))
    log(f"hub {ref}: built in {_fmt_secs(time.monotonic() - t0)}")
    return ref


def gateway_version() -> str:
    """dask-gateway-server's pin in constraints.txt: the gateway image's tag."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.startswith("dask-gateway-server=="):
            return line.split("==", 1)[1].strip()
    raise BuildError("constraints.txt pins no dask-gateway-server")


def traefik_binary(log: Log) -> Path:
    """traefik, built once from the Go module proxy (``scripts/k8s-node.sh traefik``)."""
    t0 = time.monotonic()
    p = subprocess.run([str(REPO / "scripts" / "k8s-node.sh"), "traefik"], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise BuildError("building traefik failed (scripts/k8s-node.sh traefik; its log is above)")
    path = Path(p.stdout.strip().splitlines()[-1])
    if time.monotonic() - t0 > 5:
        log(f"traefik {path}: built in {_fmt_secs(time.monotonic() - t0)}")
    return path


def build_gateway(*, ca_bundle: str | None = None, log: Log = print) -> str:
    """``stackhub/dask-gateway:<dask-gateway-server version>``: the gateway's API server, its
    controller and traefik, for the chart's spawner.backend.daskGateway. Kept when its inputs (the
    recipe, constraints, base, traefik binary) are unchanged."""
    t0 = time.monotonic()
    client = _client()
    base = ensure_base(client, log)
    traefik = traefik_binary(log)
    constraints = (REPO / "constraints.txt").read_bytes()
    digest = inputs_hash(dir_parts(GATEWAY_DIR) + [
        ("constraints.txt", constraints), ("base", client.images.get(base).id.encode()),
        ("traefik", hashlib.sha256(traefik.read_bytes()).hexdigest().encode())])
    ref = f"{GATEWAY_REPO}:{gateway_version()}"
    if (_image_labels(client, ref) or {}).get("stackhub.inputs") == digest:
        log(f"dask-gateway {ref}: up to date")
        return ref
    log(f"dask-gateway {ref}: building")
    image_id = dockerfile_then_install(
        client, log,
        context=GATEWAY_DIR, dockerfile="Dockerfile", base=base,
        script=GATEWAY_DIR / "install-gateway.sh",
        inputs={"constraints.txt": constraints, "traefik": traefik.read_bytes()},
        ca_bundle=ca_bundle,
        changes=[
            "USER 1000:1000",
            'ENTRYPOINT ["/usr/bin/tini", "-g", "--"]',
            'CMD ["dask-gateway-server"]',
            f'LABEL "stackhub.image"="dask-gateway" "stackhub.inputs"="{digest}"',
        ],
        message=f"stackhub: dask-gateway {gateway_version()} (pip + traefik)",
    )
    client.images.get(image_id).tag(GATEWAY_REPO, gateway_version())
    log(f"dask-gateway {ref}: built in {_fmt_secs(time.monotonic() - t0)}")
    return ref


# --- command line -----------------------------------------------------------------------------


def print_catalog(prefix: str, repository: str) -> int:
    """The tags built here as the ConfigMap the Kubernetes hub reads (``kubectl apply -f -``): the
    image build writes the catalog, so a cluster without a registry API still knows its tags."""
    import docker

    from spawner.core.catalog import catalog_configmap
    from spawner.core.names import Deployment

    images = docker.APIClient(version="auto").images(name=repository)
    cm = catalog_configmap(Deployment(prefix).catalog_configmap, images, repository)
    if not cm["data"]:
        print(f"stackhub images catalog: no labelled {repository} images on this engine", file=sys.stderr)
        return 1
    print(json.dumps(cm, indent=2))
    return 0


REPOSITORY_RE = r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"


def _repository(value: str) -> str:
    """A Docker repository name without tag or registry port (lower case, ``/``-separated)."""
    if not re.fullmatch(REPOSITORY_RE, value) or len(value) > 200:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an image repository name (lower-case letters, digits, '.', '_', '-', separated by '/'; no tag)")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spawner.build.images", description="Build the stackhub images.")
    sub = p.add_subparsers(dest="command", required=True)
    ca_help = (
        "CA bundle (PEM) trusted by pip/npm during the build steps only, for a TLS-intercepting proxy; "
        "it is never stored in an image (default: none)"
    )
    b = sub.add_parser("build", help="build stack images (default set: %s)" % " ".join(DEFAULT_TAGS))
    b.add_argument("tags", nargs="*", metavar="TAG", help="stack tags, e.g. w_2026_43 v30_0_0")
    b.add_argument("--ca-bundle", metavar="PATH", help=ca_help)
    b.add_argument(
        "--recommended", metavar="TAG", default=DEFAULT_RECOMMENDED,
        help=f"tag aliased as 'recommended' (built if not listed; default {DEFAULT_RECOMMENDED}; '' for none)",
    )
    b.add_argument(
        "--repository", metavar="REPO", default=STACK_REPO, type=_repository,
        help=f"image repository of the stack tags (default {STACK_REPO}); the shared layer goes to REPO{SHARED_SUFFIX}",
    )
    b.add_argument(
        "--if-stale", action="store_true",
        help="do nothing (and ask PyPI nothing) when every tag is an image of the current recipe already",
    )
    h = sub.add_parser("build-hub", help="build the hub image stackhub/hub:<version>")
    h.add_argument("--ca-bundle", metavar="PATH", help=ca_help)
    g = sub.add_parser("build-gateway", help=f"build the dask-gateway image {GATEWAY_REPO}:<version> (with traefik)")
    g.add_argument("--ca-bundle", metavar="PATH", help=ca_help)
    c = sub.add_parser("catalog", help="print the stack catalog ConfigMap (Kubernetes) of the stack images on this engine")
    c.add_argument("--prefix", default="stackhub", help="the deployment's hub.prefix (default stackhub)")
    c.add_argument("--repository", default=STACK_REPO, help=f"stack image repository (default {STACK_REPO})")
    from spawner.build import export

    e = sub.add_parser("export", help="write a stack image for HPC: SIF, squashfs or docker-archive (docs/hpc.md)")
    e.add_argument("tag", metavar="TAG", help="stack tag, e.g. w_2026_43, or recommended")
    e.add_argument("--format", required=True, metavar="|".join(export.FORMATS),
                   help="what to write; a comma-separated list writes several (sif,squashfs share one mksquashfs run)")
    e.add_argument("--output", "-o", metavar="PATH", help="file to write, for one format (default: lsst-stack_TAG.sif/.sqsh/.tar)")
    e.add_argument("--output-dir", metavar="DIR", help="directory for the files (default: here)")
    e.add_argument("--repository", metavar="REPO", default=STACK_REPO, type=_repository,
                   help=f"image repository of the tag (default {STACK_REPO})")
    e.add_argument("--force", action="store_true", help="replace the output file if it exists")
    r = sub.add_parser("resolve", help="print the package versions of tags, build nothing")
    r.add_argument("tags", nargs="*", metavar="TAG")
    r.add_argument("--ca-bundle", metavar="PATH", help=ca_help)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "catalog":
        return print_catalog(args.prefix, args.repository)
    if getattr(args, "ca_bundle", None) and not Path(args.ca_bundle).is_file():
        print(f"stackhub images: --ca-bundle {args.ca_bundle}: no such file", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        if args.command == "build":
            build_stacks(args.tags, recommended=args.recommended or None, ca_bundle=args.ca_bundle,
                         repository=args.repository, if_stale=args.if_stale, log=log)
        elif args.command == "export":
            from spawner.build import export

            try:
                export.parse_formats(args.format)  # bad input is refused before the engine is asked
                export.check_tag(args.tag)
                export.export_image(_client(), args.tag, args.format.split(","), output=args.output,
                                    output_dir=args.output_dir, repository=args.repository, force=args.force,
                                    log=log)
            except export.ExportError as e:
                raise BuildError(str(e)) from None
        elif args.command == "build-hub":
            build_hub(ca_bundle=args.ca_bundle, log=log)
        elif args.command == "build-gateway":
            build_gateway(ca_bundle=args.ca_bundle, log=log)
        else:
            versions = stack_versions.fetch_versions(ca_bundle=args.ca_bundle, python=STACK_PYTHON)
            for tag in args.tags or DEFAULT_TAGS:
                print(tag, json.dumps(stack_versions.resolve(tag, versions)))
    except (BuildError, stack_versions.UnbuildableTag, stack_versions.PyPIUnavailable) as e:
        print(f"stackhub images: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
