"""The pure parts of `stackhub images export` (spawner.build.export); the artefacts themselves are
checked in tests/integration/test_hpc_export.py."""

import subprocess
from pathlib import Path

import pytest

from spawner.build import export


def test_formats_are_checked_and_deduplicated():
    assert export.parse_formats("sif") == ["sif"]
    assert export.parse_formats("sif, squashfs,sif") == ["sif", "squashfs"]
    for bad in ("zip", "sif,zip", "", ","):
        with pytest.raises(export.ExportError, match="allowed: sif, squashfs, docker-archive"):
            export.parse_formats(bad)


def test_tags_are_stack_tags_or_recommended():
    assert export.check_tag("w_2026_43") == "w_2026_43"
    assert export.check_tag("recommended") == "recommended"
    for bad in ("../etc", "a/b", ""):
        with pytest.raises(export.ExportError, match="not a stack tag"):
            export.check_tag(bad)


def test_default_names_carry_repository_tag_and_format():
    assert export.default_output("stackhub/lsst-stack", "w_2026_43", "sif") == Path("lsst-stack_w_2026_43.sif")
    assert export.default_output("me/x", "v30_0_0", "squashfs", Path("/out")) == Path("/out/x_v30_0_0.sqsh")
    assert export.default_output("me/x", "v30_0_0", "docker-archive").suffix == ".tar"


def test_environment_keeps_the_image_env_but_not_the_runtime_home(tmp_path):
    script = export.environment_script(["PATH=/opt/a:/usr/bin", "HOME=/home/lsst", "ODD=it's $x", "EMPTY="])
    f = tmp_path / "env.sh"
    f.write_text(script)
    out = subprocess.run(["sh", "-c", f'HOME=/mine; . {f}; printf "%s|%s|%s|%s" "$PATH" "$HOME" "$ODD" "${{EMPTY-unset}}"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "/opt/a:/usr/bin|/mine|it's $x|"


def test_hpc_files_are_env_runscript_and_labels():
    files = export.hpc_files({"Env": ["A=1"], "Labels": {"stackhub.tag": "w_2026_43"}})
    assert sorted(files) == [".singularity.d/env/10-docker2singularity.sh", ".singularity.d/labels.json",
                             ".singularity.d/runscript"]
    text, mode = files[".singularity.d/runscript"]
    assert mode == 0o755 and "source /opt/lsst/software/stack/loadLSST.bash\nsetup lsst_distrib\n" in text
    assert '"stackhub.tag": "w_2026_43"' in files[".singularity.d/labels.json"][0]
