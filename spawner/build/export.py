"""Export a stack image for HPC centres, which run Apptainer/Singularity or Shifter, not Docker.

    stackhub images export TAG --format sif|squashfs|docker-archive [--output PATH] [--repository REPO]
    stackhub images export TAG --format sif,squashfs [--output-dir DIR]     (one filesystem pass for both)

The same image and tag as the hub's (``stackhub/lsst-stack:<tag>``), so a notebook developed in
the lab runs unchanged in a batch job:

- ``docker-archive``: ``docker save`` of the image (``docker load``, ``apptainer build x.sif
  docker-archive://x.tar``, or a push to a site registry for Shifter's image gateway);
- ``squashfs``: the image's filesystem as one squashfs (Apptainer runs ``.sqsh`` files; Shifter
  keeps its images in this form);
- ``sif``: that squashfs as the primary system partition of a SIF file, written with ``siftool``
  (the SIF reference implementation, ``github.com/apptainer/sif/v2``; ``make hpc-tools``).

The filesystem is the image's own (user ``lsst``, ``/opt/lsst/software/stack/loadLSST.bash``, the
``LSST`` kernel, the ``setup``/``setup -r`` shim), plus what Apptainer reads from
``/.singularity.d/``: the image's environment (``env/``), its labels and a ``runscript`` that sets
up ``lsst_distrib`` as the lab's terminals and kernel do, then runs the given command (or a login
shell). On HPC the user is the caller's own (Apptainer and Shifter never switch to ``lsst``), so
``HOME`` is left to the runtime. docs/hpc.md has the run commands.

Nothing is half-written: the artefact is written next to the output under a temporary name and
renamed when complete; a failure removes it. Pure parts (scripts, names, argument checks) are
plain functions; Docker, tar, mksquashfs and siftool are touched only by :func:`export_image`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from spawner.core.tags import TagError, parse_tag

FORMATS = {"sif": "sif", "squashfs": "sqsh", "docker-archive": "tar"}
SIFTOOL_MODULE = "github.com/apptainer/sif/v2/cmd/siftool@v2.25.0"
TOOLS_BIN = Path(__file__).resolve().parents[2] / "var" / "tools" / "bin"
# the image's variables that belong to the runtime on HPC, not to the image
RUNTIME_ENV = {"HOME", "HOSTNAME", "USER"}
# SIF descriptor values (siftool add): partition, squashfs, primary system partition, amd64, in
# object group 1 (as Apptainer writes its images)
SIF_PARTITION = ["--datatype", "4", "--partfs", "1", "--parttype", "2", "--partarch", "2", "--groupid", "1"]

Log = Callable[[str], None]


class ExportError(RuntimeError):
    """The export cannot be made; the message says why and what to do."""


# --- pure parts -------------------------------------------------------------------------------


def check_tag(tag: str) -> str:
    """A stack tag (``w_2026_43``, ``v30_0_0``, ...) or ``recommended``; anything else refused."""
    if tag == "recommended":
        return tag
    try:
        parse_tag(tag)
    except TagError as e:
        raise ExportError(str(e)) from None
    return tag


def default_output(repository: str, tag: str, fmt: str, directory: Path = Path(".")) -> Path:
    return directory / f"{repository.rsplit('/', 1)[-1]}_{tag}.{FORMATS[fmt]}"


def parse_formats(value: str) -> list[str]:
    """``sif``, ``squashfs``, ``docker-archive`` or a comma-separated list of them (deduplicated)."""
    formats = list(dict.fromkeys(f.strip() for f in value.split(",")))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ExportError(f"unknown format {', '.join(map(repr, bad)) or repr(value)}; allowed: {', '.join(FORMATS)} "
                          "(or a comma-separated list)")
    return formats


def environment_script(env: Sequence[str]) -> str:
    """``/.singularity.d/env/10-docker2singularity.sh``: the image's ``ENV`` as shell exports
    (what Apptainer writes when it converts a Docker image), without the runtime's own."""
    lines = ["#!/bin/sh", "# stackhub: the Docker image's ENV (HOME and USER are the runtime's)"]
    for item in env:
        name, _, value = item.partition("=")
        if name and name not in RUNTIME_ENV:
            lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


RUNSCRIPT = """#!/bin/bash
# stackhub: lsst_distrib set up, as in the lab's terminals and LSST kernel; then the command given,
# or a login shell. `setup -r DIR` works as in the lab (loadLSST.bash).
source /opt/lsst/software/stack/loadLSST.bash
setup lsst_distrib
# the stack's shell functions (setup, unsetup, eups) reach a `bash -c` given as the command, too
export -f $(compgen -A function)
if [ $# -eq 0 ]; then
  exec /bin/bash -l
fi
exec "$@"
"""


def hpc_files(config: Mapping) -> dict[str, tuple[str, int]]:
    """Files added to the exported filesystem: path -> (text, mode). ``config`` is the image's
    ``Config`` (``docker inspect``)."""
    return {
        ".singularity.d/env/10-docker2singularity.sh": (environment_script(config.get("Env") or []), 0o755),
        ".singularity.d/runscript": (RUNSCRIPT, 0o755),
        ".singularity.d/labels.json": (json.dumps(config.get("Labels") or {}, indent=1, sort_keys=True) + "\n", 0o644),
    }


def siftool_path() -> str | None:
    found = shutil.which("siftool")
    if found:
        return found
    local = TOOLS_BIN / "siftool"
    return str(local) if local.is_file() else None


# --- I/O --------------------------------------------------------------------------------------


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise ExportError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def _fmt_mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def _write_stream(chunks, sink, log: Log, what: str) -> int:
    """Copy a stream of byte chunks into ``sink``, logging progress every ~200 MB."""
    total, next_note = 0, 200_000_000
    for chunk in chunks:
        sink.write(chunk)
        total += len(chunk)
        if total >= next_note:
            log(f"  {what}: {_fmt_mb(total)}")
            next_note += 200_000_000
    return total


def _rootfs(client, image, dest: Path, log: Log) -> None:
    """The image's filesystem, with owners and modes, into ``dest`` (a container is created for
    ``docker export`` and never started), plus :func:`hpc_files`."""
    if os.geteuid() != 0:
        raise ExportError("squashfs and sif exports run as root (the image's files keep their owners, e.g. "
                          "/home belongs to lsst); run the export with sudo")
    container = client.containers.create(image.id, command=["true"], entrypoint=[])
    try:
        tar = subprocess.Popen(["tar", "-x", "-p", "--numeric-owner", "-C", str(dest)], stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            size = _write_stream(container.export(), tar.stdin, log, "filesystem")
        finally:
            tar.stdin.close()
        if tar.wait():
            raise ExportError(f"unpacking the image's filesystem failed: {tar.stderr.read().decode()[-1000:]}")
    finally:
        container.remove(force=True)
    for rel, (text, mode) in hpc_files(image.attrs["Config"]).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    log(f"  filesystem: {_fmt_mb(size)} unpacked")


def _squashfs(rootfs: Path, out: Path, log: Log) -> None:
    if not shutil.which("mksquashfs"):
        raise ExportError("mksquashfs is missing: install squashfs-tools (apt-get install squashfs-tools, "
                          "or `make hpc-tools`)")
    t0 = time.monotonic()
    log("  mksquashfs (gzip, as Apptainer builds) ...")
    _run(["mksquashfs", str(rootfs), str(out), "-noappend", "-comp", "gzip", "-no-progress", "-quiet"], "mksquashfs")
    log(f"  squashfs: {_fmt_mb(out.stat().st_size)} in {time.monotonic() - t0:.0f}s")


def sif_from_squashfs(squashfs: Path, out: Path, log: Log) -> None:
    """A SIF file with ``squashfs`` as its primary system partition (amd64)."""
    siftool = siftool_path()
    if not siftool:
        raise ExportError(f"siftool is missing: `make hpc-tools` builds it ({SIFTOOL_MODULE}, Go), "
                          f"into {TOOLS_BIN}, or put it on PATH")
    _run([siftool, "new", str(out)], "siftool new")
    _run([siftool, "add", *SIF_PARTITION, str(out), str(squashfs)], "siftool add")
    log(f"  sif: {_fmt_mb(out.stat().st_size)}")


def export_image(client, tag: str, formats: Sequence[str], *, output: Path | None = None,
                 output_dir: Path | None = None, repository: str, force: bool = False,
                 log: Log = print) -> list[Path]:
    """Write ``<repository>:<tag>`` in each of ``formats``; returns the paths written.

    ``output`` names the file when one format is asked for; otherwise each goes to
    ``output_dir`` (default: here) under :func:`default_output`. squashfs and sif share one
    unpacked filesystem and one mksquashfs run.
    """
    import docker

    formats = parse_formats(",".join(formats))
    check_tag(tag)
    if output and len(formats) > 1:
        raise ExportError("--output names one file: with several formats use --output-dir")
    ref = f"{repository}:{tag}"
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        have = sorted(t.split(":", 1)[1] for img in client.images.list(name=repository) for t in img.tags
                      if t.startswith(repository + ":"))
        raise ExportError(f"no image {ref}; exportable tags: {', '.join(have) or 'none (run make images)'}") from None
    if (image.labels or {}).get("stackhub.image") != "lsst-stack":
        raise ExportError(f"{ref} is not a stackhub stack image (no label stackhub.image=lsst-stack)")
    outs = {f: Path(output) if output else default_output(repository, tag, f, Path(output_dir or ".")) for f in formats}
    for out in outs.values():
        if out.exists() and not force:
            raise ExportError(f"{out} exists; remove it or pass --force")
        if not out.parent.is_dir():
            raise ExportError(f"{out.parent} is not a directory")
    t0 = time.monotonic()
    log(f"exporting {ref} as {', '.join(formats)} ...")
    partial = {f: out.with_name(f".{out.name}.partial") for f, out in outs.items()}
    try:
        if "docker-archive" in formats:
            with open(partial["docker-archive"], "wb") as f:
                _write_stream(image.save(named=ref), f, log, "docker save")
        if {"squashfs", "sif"} & set(formats):
            where = next(out.parent for f, out in outs.items() if f != "docker-archive")
            with tempfile.TemporaryDirectory(prefix="stackhub-export-", dir=where) as tmp:
                rootfs = Path(tmp) / "rootfs"
                rootfs.mkdir()
                _rootfs(client, image, rootfs, log)
                sqsh = partial.get("squashfs") or Path(tmp) / "rootfs.sqsh"
                _squashfs(rootfs, sqsh, log)
                if "sif" in formats:
                    sif_from_squashfs(sqsh, partial["sif"], log)
        for f, out in outs.items():
            partial[f].chmod(0o644)
            partial[f].replace(out)
            log(f"{out}: {_fmt_mb(out.stat().st_size)}")
    finally:
        for p in partial.values():
            p.unlink(missing_ok=True)
    log(f"done in {time.monotonic() - t0:.0f}s")
    return list(outs.values())
