"""`stackhub images export` (docs/hpc.md): the artefacts an HPC centre gets, checked without Docker
where a centre has none.

- squashfs: unpacked and run with chroot as the non-root user (uid 1000): the LSST stack is set up
  by the image's own runscript, lsst.daf.butler imports, and `setup -r` puts a package in front;
- sif: siftool reads its header and finds the squashfs as the primary system partition, whose
  bytes are the squashfs's;
- docker-archive: loads back into the engine as the same image.

One export writes the squashfs and the SIF (one mksquashfs run). Needs root (the exported files
keep their owners), mksquashfs and siftool (`make hpc-tools`). The repository is
``STACKHUB_TEST_STACK_REPOSITORY`` (default ``stackhub/lsst-stack``), as in test_dask.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import docker
import pytest

from spawner.build import export

REPO_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = os.environ.get("STACKHUB_TEST_STACK_REPOSITORY", "stackhub/lsst-stack")
TAG = "recommended"


def stackhub_images(*args, cwd):
    return subprocess.run([sys.executable, "-m", "spawner.cli.main", "images", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PATH": f"{export.TOOLS_BIN}:{os.environ['PATH']}"})


@pytest.fixture(scope="module")
def client():
    return docker.from_env()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, client):
    if os.geteuid() != 0:
        pytest.fail("the squashfs/sif export runs as root (owners of the image's files are kept)")
    if not export.siftool_path() or not subprocess.run(["which", "mksquashfs"], capture_output=True).returncode == 0:
        pytest.fail("mksquashfs or siftool missing: run `make hpc-tools`")
    out = tmp_path_factory.mktemp("export")
    r = stackhub_images("export", TAG, "--repository", REPOSITORY, "--format", "sif,squashfs", "--output-dir", str(out),
                        cwd=out)
    assert r.returncode == 0, r.stdout + r.stderr
    name = REPOSITORY.rsplit("/", 1)[-1]
    files = {"sif": out / f"{name}_{TAG}.sif", "squashfs": out / f"{name}_{TAG}.sqsh", "log": r.stdout}
    assert files["sif"].is_file() and files["squashfs"].is_file(), sorted(p.name for p in out.iterdir())
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a partial file or work directory was left"
    return files


def test_squashfs_runs_the_stack_without_docker_as_the_non_root_user(exported, tmp_path):
    listing = subprocess.run(["unsquashfs", "-l", str(exported["squashfs"])], capture_output=True, text=True).stdout
    for path in ("/opt/lsst/software/stack/loadLSST.bash", "/opt/lsst/software/stack/env/share/jupyter/kernels/lsst/kernel.json",
                 "/.singularity.d/runscript", "/.singularity.d/env/10-docker2singularity.sh"):
        assert f"squashfs-root{path}\n" in listing, path
    root = tmp_path / "root"
    subprocess.run(["unsquashfs", "-q", "-d", str(root), str(exported["squashfs"])], check=True, capture_output=True)
    script = textwrap.dedent("""
        . /.singularity.d/env/10-docker2singularity.sh
        mkdir -p /tmp/toy/python/lsst/toy /tmp/toy/ups
        echo 'VALUE = 42' > /tmp/toy/python/lsst/toy/__init__.py
        touch /tmp/toy/ups/toy_pkg.table
        exec /.singularity.d/runscript bash -c '
          setup -r /tmp/toy
          python -c "import json, os, lsst.daf.butler, lsst.toy
        print(json.dumps({\\"uid\\": os.getuid(), \\"butler\\": lsst.daf.butler.__name__, \\"toy\\": lsst.toy.VALUE,
                          \\"distrib\\": os.environ[\\"SETUP_LSST_DISTRIB\\"], \\"toy_dir\\": os.environ[\\"TOY_PKG_DIR\\"]}))"
          jupyter kernelspec list --json'
    """)
    r = subprocess.run(["chroot", "--userspec=1000:1000", str(root), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
                        "HOME=/tmp", "/bin/bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    first, rest = r.stdout.split("\n", 1)
    got = json.loads(first)
    assert got == {"uid": 1000, "butler": "lsst.daf.butler", "toy": 42, "toy_dir": "/tmp/toy",
                   "distrib": got["distrib"]} and got["distrib"].startswith("lsst_distrib w_20"), got
    assert "lsst" in json.loads(rest)["kernelspecs"]
    assert (root / "home").stat().st_uid == 1000  # owners kept: the image's user owns /home


def test_sif_has_the_squashfs_as_primary_partition(exported, tmp_path):
    siftool = export.siftool_path()
    header = subprocess.run([siftool, "header", str(exported["sif"])], capture_output=True, text=True, check=True).stdout
    assert "Primary Architecture: amd64" in header, header
    listing = subprocess.run([siftool, "list", str(exported["sif"])], capture_output=True, text=True, check=True).stdout
    rows = [line for line in listing.splitlines() if "FS (" in line]
    assert len(rows) == 1 and "Squashfs/*System/amd64" in rows[0], listing
    object_id = rows[0].split("|")[0].strip()
    dumped = tmp_path / "partition.sqsh"
    with open(dumped, "wb") as f:
        subprocess.run([siftool, "dump", object_id, str(exported["sif"])], stdout=f, check=True)
    assert dumped.read_bytes() == exported["squashfs"].read_bytes()
    assert exported["sif"].stat().st_size - dumped.stat().st_size < 1 << 20  # header + descriptors only


def test_docker_archive_loads_as_the_same_image(client, tmp_path):
    image = client.images.get(f"{REPOSITORY}:{TAG}")
    r = stackhub_images("export", TAG, "--repository", REPOSITORY, "--format", "docker-archive", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    archive = tmp_path / f"{REPOSITORY.rsplit('/', 1)[-1]}_{TAG}.tar"
    with tarfile.open(archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [f"{REPOSITORY}:{TAG}"], manifest
    with open(archive, "rb") as f:
        loaded = client.images.load(f)
    assert [img.id for img in loaded] == [image.id]


def test_bad_requests_are_refused_and_write_nothing(tmp_path):
    for args, needle in ((["no/such", "--format", "sif"], "not a stack tag"),
                         (["w_2026_43", "--format", "zip"], "allowed: sif, squashfs, docker-archive"),
                         (["w_2099_01", "--format", "squashfs", "--repository", REPOSITORY], "exportable tags:"),
                         (["recommended", "--format", "sif,squashfs", "-o", "x.sif"], "with several formats use --output-dir")):
        r = stackhub_images("export", *args, cwd=tmp_path)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    (tmp_path / "mine.sif").write_text("keep me")
    r = stackhub_images("export", TAG, "--repository", REPOSITORY, "--format", "sif", "-o", "mine.sif", cwd=tmp_path)
    assert r.returncode != 0 and "mine.sif exists; remove it or pass --force" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.sif"] and (tmp_path / "mine.sif").read_text() == "keep me"
