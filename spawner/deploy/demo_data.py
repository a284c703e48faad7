"""The demo Butler repository in the data volume: made once, by the stack itself, at ``up``.

``ensure_demo_data`` runs ``demo_repo.py`` (which see) in a throwaway container of a stack image
with the data volume mounted read-write at ``/data``; users mount it read-only. The program
returns at once when the repository is there, so it is made only when missing. The image is the
stack tag with the oldest ``lsst-daf-butler``: a repository made by an older Butler opens in the
newer ones (measured: made by v30_0_0, read by w_2026_42 and w_2026_43). Right after making it,
every other tag opens it once, and a tag that cannot is named in the log.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from spawner.core.config import StackhubConfig
from spawner.core.specs import container_log_config, log_limit

DEMO_SCRIPT = Path(__file__).with_name("demo_repo.py")
SCRIPT_IN = "/opt/stackhub-demo"  # where the program is put in the builder container
BUILD_TIMEOUT = 900
READ_CHECK = ("from lsst.daf.butler import Butler; "
              "b = Butler('/data/butler', collections='demo/raw'); "
              "n = len(b.query_datasets('demo_image', instrument='DemoCam')); "
              "assert n == 12, n; print('ok', n)")


def data_target(cfg: StackhubConfig):
    """The data mount users see at ``/data`` (None: the operator mounts no ``/data``)."""
    return next((m for m in cfg.volumes.data if m.target == "/data"), None)


def butler_version(image_attrs: dict) -> tuple:
    """A sortable version of the image's lsst-daf-butler (from its labels); unknown sorts last."""
    from packaging.version import InvalidVersion, Version

    labels = (image_attrs.get("Config") or {}).get("Labels") or {}
    try:
        text = json.loads(labels.get("stackhub.versions") or "{}").get("lsst-daf-butler")
        return (0, Version(text)) if text else (1, None)
    except (ValueError, InvalidVersion):
        return (1, None)


def stack_images(client, repository: str) -> list[tuple[str, str]]:
    """(tag, image id) of every stack image, the oldest lsst-daf-butler first."""
    found = {}
    for image in client.images.list(name=repository):
        tags = [t.split(":", 1)[1] for t in image.tags if t.startswith(repository + ":")]
        tag = (image.labels or {}).get("stackhub.tag") or next((t for t in tags if t != "recommended"), None)
        if tag and tag != "recommended":
            found[tag] = image
    ordered = sorted(found.items(), key=lambda kv: (butler_version(kv[1].attrs)[0],
                                                    str(butler_version(kv[1].attrs)[1] or "")))
    return [(tag, image.id) for tag, image in ordered]


def builder_container(cfg: StackhubConfig, image: str, tag: str) -> dict:
    """``containers.create`` arguments of the builder. Pure.

    Root (the volume is root's, and users must not be able to change what it makes), but with no
    capabilities, no network and a process limit; it writes only to the data volume.
    """
    mount = data_target(cfg)
    source_kind = "bind" if mount.source.startswith("/") else "volume"
    return dict(
        image=image,
        entrypoint=["/usr/bin/tini", "-g", "--"],
        command=["bash", "-lc", f"python {SCRIPT_IN}/demo_repo.py {tag}"],
        user="0",
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=512,
        mem_limit="2g",
        **container_log_config(log_limit(cfg)),
        labels={"stackhub.role": "demo-data", "stackhub.deployment": cfg.hub.prefix},
        mounts=[{"Type": source_kind, "Source": mount.source, "Target": "/data", "ReadOnly": False}],
        detach=True,
    )


def _tar(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=f"{SCRIPT_IN.rsplit('/', 1)[1]}/demo_repo.py")
    return buf.getvalue()


def _run(client, kwargs: dict, *, log, put: bytes | None = None, timeout: float = BUILD_TIMEOUT) -> tuple[int, str]:
    from docker.errors import APIError, NotFound

    container = client.containers.create(**kwargs)
    try:
        if put is not None:
            container.put_archive(SCRIPT_IN.rsplit("/", 1)[0], put)  # put_archive needs the parent to exist
        container.start()
        deadline = time.monotonic() + timeout
        for line in container.logs(stream=True, follow=True, stdout=True, stderr=False):
            for text in line.decode(errors="replace").splitlines():
                if text.strip():
                    log(f"  {text.strip()}")
            if time.monotonic() > deadline:
                container.kill()
                break
        code = container.wait(timeout=max(1, deadline - time.monotonic())).get("StatusCode", 1)
        return code, container.logs(stdout=False, stderr=True, tail=20).decode(errors="replace")
    finally:
        try:
            container.remove(force=True)
        except (APIError, NotFound):
            pass


def ensure_demo_data(client, cfg: StackhubConfig, log=print) -> bool:
    """Make the demo repository in the ``/data`` volume if it is missing; True if it was made now."""
    mount = data_target(cfg)
    if mount is None:
        log("demo data: no data mount at /data (volumes.data); skipped")
        return False
    images = stack_images(client, cfg.stack.repository)
    if not images:
        log(f"demo data: no {cfg.stack.repository} image; skipped")
        return False
    tag, image = images[0]
    kwargs = builder_container(cfg, image, tag)
    kwargs.pop("detach")
    # a shell first: it checks the marker without starting Python (fast on every later `up`)
    check = dict(kwargs, entrypoint=["sh"], command=["-c", "test -f /data/.stackhub-demo.json"])
    code, _ = _run(client, check, log=log, timeout=60)
    if code == 0:
        return False
    log(f"demo data: making the demo Butler repository in {mount.source} with {tag} (once) ...")
    code, stderr = _run(client, kwargs, log=log, put=_tar(DEMO_SCRIPT))
    if code != 0:
        raise RuntimeError(f"making the demo data in {mount.source} failed (exit {code}):\n{stderr[-1500:]}")
    for other, other_image in images[1:]:
        reader = dict(kwargs, image=other_image, user=str(cfg.spawner.uid), entrypoint=["bash"],
                      command=["-lc", f"python -c \"{READ_CHECK}\""])
        reader["mounts"] = [dict(kwargs["mounts"][0], ReadOnly=True)]
        code, stderr = _run(client, reader, log=lambda m: None, timeout=120)
        if code != 0:
            log(f"warning: {other} cannot read the demo repository made by {tag}: {stderr.strip()[-300:]}")
    log(f"demo data: /data/butler made by {tag}; opened by {', '.join(t for t, _ in images)}")
    return True
