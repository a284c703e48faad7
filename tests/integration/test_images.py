"""The stack and hub images on a real engine (built beforehand by `make images` / build-hub).

Each check runs against every image of the default set that exists; a missing image is skipped
with the command that builds it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import re
import subprocess
import tarfile
import textwrap
import uuid

import docker
import pytest

from spawner.build import images as img
from spawner.build.stack_versions import PACKAGES
from spawner.core.tags import parse_tag

pytestmark = pytest.mark.engine

HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def client():
    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"no Docker engine answers ({e}); run scripts/docker-engine.sh")
    return c


def require_image(client, ref: str, how: str = "make images"):
    """The image, or a failure naming the command that builds it (`make test` builds them first)."""
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{ref} is not built: run `{how}`")


@pytest.fixture(scope="module", params=img.DEFAULT_TAGS)
def stack(request, client):
    ref = f"{img.STACK_REPO}:{request.param}"
    require_image(client, ref, "make images (python -m spawner.build.images build)")
    return request.param, ref


@pytest.fixture(scope="module")
def box(client, stack):
    """A running container of the stack image (as its default user) to exec into."""
    tag, ref = stack
    c = client.containers.run(
        ref, ["sleep", "infinity"], detach=True, name=f"stackhub-test-img-{uuid.uuid4().hex[:8]}",
        environment={"HOME": "/home/tester", "STACKHUB_USER": "tester"},
    )
    try:
        c.exec_run(["mkdir", "-p", "/home/tester"])
        yield c
    finally:
        c.remove(force=True)


def sh(container, script: str, *, login: bool = True, stdin: str | None = None) -> tuple[int, str]:
    """Run bash in the container (a login shell by default); returns (exit code, output)."""
    if stdin is not None:
        p = subprocess.run(
            ["docker", "exec", "-i", container.id, "bash", "-l"], input=stdin, capture_output=True, text=True,
            timeout=300,
        )
        return p.returncode, p.stdout + p.stderr
    code, out = container.exec_run(["bash", "-lc" if login else "-c", script], demux=False)
    return code, out.decode(errors="replace")


def test_runs_as_non_root(client, stack):
    _, ref = stack
    out = client.containers.run(ref, ["id"], remove=True).decode()
    assert out.startswith("uid=1000(lsst) gid=1000(lsst)"), out
    home = client.containers.run(ref, ["stat", "-c", "%u:%g", "/home"], remove=True).decode().strip()
    assert home == "1000:1000"


def test_default_command_is_the_start_script(client, stack):
    _, ref = stack
    cfg = client.images.get(ref).attrs["Config"]
    assert cfg["Cmd"] == ["stackhub-start"]
    assert cfg["User"] == "lsst"
    # no VOLUME left from the build step's mount: each server would leave an anonymous volume behind
    assert not cfg.get("Volumes"), cfg.get("Volumes")


def test_start_script_makes_home_and_execs_singleuser(client, stack):
    _, ref = stack
    vol = client.volumes.create(f"stackhub-test-home-{uuid.uuid4().hex[:8]}")
    try:
        out = client.containers.run(
            ref, ["stackhub-start", "--version"], remove=True, environment={"HOME": "/home/newperson"},
            volumes={vol.name: {"bind": "/home", "mode": "rw"}},
        ).decode()
        import jupyterhub  # the hub's version: constraints.txt pins both

        major = jupyterhub.__version__.split(".")[0]
        assert re.search(rf"^{major}\.", out.strip(), re.M), out  # jupyterhub-singleuser --version, the hub's major
        owner = client.containers.run(ref, ["stat", "-c", "%U %F", "/home/newperson"], remove=True, entrypoint=[],
                                      volumes={vol.name: {"bind": "/home", "mode": "ro"}}).decode().strip()
        assert owner == "lsst directory"  # made by the start script, as the user
    finally:
        vol.remove(force=True)


def test_bash_login_has_lsst_distrib(box):
    code, out = sh(box, 'python -c "import lsst.daf.butler" && echo "SETUP=$SETUP_LSST_DISTRIB" && echo "DIR=$LSST_DISTRIB_DIR"')
    assert code == 0, out
    assert re.search(r"^SETUP=lsst_distrib \S+", out, re.M), out
    assert "DIR=/opt/lsst/software/stack/lsst_distrib" in out


def test_terminal_like_login_shell_has_lsst_distrib(box):
    # what terminado runs for a JupyterLab terminal: /bin/bash -l reading commands from the pty
    code, out = sh(box, "", stdin='echo "SETUP=$SETUP_LSST_DISTRIB"\npython -c "import lsst.pipe.base; print(\'pipe_base ok\')"\n')
    assert code == 0, out
    assert re.search(r"^SETUP=lsst_distrib", out, re.M), out
    assert "pipe_base ok" in out


def test_server_config_terminals_login_and_default_kernel(box):
    script = textwrap.dedent("""
        import json
        from jupyter_server.serverapp import ServerApp
        app = ServerApp()
        app.load_config_file()
        c = app.config
        from jupyter_client.kernelspec import KernelSpecManager
        ksm = KernelSpecManager(config=c)
        print(json.dumps({
            "shell": c.ServerApp.terminado_settings.get("shell_command"),
            "default": c.MultiKernelManager.default_kernel_name,
            "kernels": sorted(ksm.find_kernel_specs()),
            "display": ksm.get_kernel_spec("lsst").display_name,
        }))
    """)
    code, out = box.exec_run(["python", "-c", script])
    assert code == 0, out.decode()
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert got == {"shell": ["/bin/bash", "-l"], "default": "lsst", "kernels": ["lsst"], "display": "LSST"}


def test_nbgitpuller_and_git(box):
    code, out = sh(box, "git --version && jupyter server extension list 2>&1")
    assert code == 0, out
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert re.search(r"nbgitpuller\S*\s+enabled", out), out


def test_lsst_kernel_imports_through_the_kernel_protocol(box):
    script = textwrap.dedent("""
        import json, os
        from jupyter_client.manager import start_new_kernel
        os.makedirs(os.path.expanduser("~/notebooks"), exist_ok=True)
        with open(os.path.expanduser("~/notebooks/.user_setups"), "w") as f:
            f.write("export USER_SETUPS_RAN=yes\\n")
        km, kc = start_new_kernel(kernel_name="lsst", startup_timeout=120)
        out = []
        try:
            reply = kc.execute_interactive(
                "import os, lsst.daf.butler, lsst.pipe.base, lsst.sphgeom\\n"
                "print('imported', lsst.daf.butler.__name__, os.environ.get('SETUP_LSST_DISTRIB', '')[:12],"
                " os.environ.get('USER_SETUPS_RAN'))",
                timeout=120,
                output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
            )
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        print(json.dumps({"status": reply["content"]["status"], "stdout": "".join(out)}))
    """)
    code, out = box.exec_run(["python", "-c", script])
    text = out.decode(errors="replace")
    assert code == 0, text
    got = json.loads(text.strip().splitlines()[-1])
    assert got["status"] == "ok", text
    assert got["stdout"].strip() == "imported lsst.daf.butler lsst_distrib yes"


def test_setup_r_puts_a_package_in_front_and_unsetup_removes(box):
    script = textwrap.dedent("""
        set -e
        d=$HOME/src/toy_pkg
        mkdir -p $d/python/lsst/toy $d/ups $d/bin
        echo 'VALUE = 42' > $d/python/lsst/toy/__init__.py
        echo 'setupRequired(lsst_distrib)' > $d/ups/toy_pkg.table
        printf '#!/bin/sh\\necho toy-tool\\n' > $d/bin/toy-tool; chmod +x $d/bin/toy-tool
        setup -r $d
        python -c 'import lsst.toy, lsst.daf.butler; print("toy", lsst.toy.VALUE)'
        toy-tool
        echo "TOY_DIR=$TOY_PKG_DIR"
        eups list -s
        unsetup toy_pkg
        python -c 'import lsst.toy' 2>/dev/null && echo "still importable" || echo "toy gone"
        unsetup lsst_distrib
        python -c 'import lsst.daf.butler' 2>/dev/null && echo "butler still importable" || echo "butler gone"
        setup lsst_distrib
        python -c 'import lsst.daf.butler' && echo "butler back"
    """)
    code, out = sh(box, script)
    assert code == 0, out
    for want in ("toy 42", "toy-tool", "TOY_DIR=/home/tester/src/toy_pkg", "toy gone", "butler gone", "butler back"):
        assert want in out, out
    assert re.search(r"^toy_pkg\s+LOCAL:/home/tester/src/toy_pkg", out, re.M), out
    assert re.search(r"^lsst_distrib\s", out, re.M), out


def test_labels(client, stack, box):
    tag, ref = stack
    labels = client.images.get(ref).labels
    assert labels["stackhub.image"] == "lsst-stack"
    assert labels["stackhub.tag"] == tag
    assert labels["stackhub.class"] == parse_tag(tag).tag_class.value
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", labels["stackhub.build-date"])
    versions = json.loads(labels["stackhub.versions"])
    assert set(versions) == set(PACKAGES)
    # the labels tell the truth about what is installed
    code, out = sh(box, "python - <<'EOF'\nimport json, importlib.metadata as m\n"
                        f"print(json.dumps({{n: m.version(n) for n in {sorted(PACKAGES)!r}}}))\nEOF")
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1]) == versions


def test_recommended_alias(client):
    rec = require_image(client, f"{img.STACK_REPO}:recommended")
    assert rec.labels["stackhub.image"] == "lsst-stack"
    assert client.images.get(f"{img.STACK_REPO}:{rec.labels['stackhub.tag']}").id == rec.id


# --- no CA bundle, no build secret in any layer ------------------------------------------------

_SEEN_LAYERS: dict[str, list[str]] = {}


def _pem_blocks(data: bytes) -> set[bytes]:
    return set(re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S))


def _layer_findings(layer: bytes, needles: list[bytes], bundle_sha: str) -> list[str]:
    found = []
    try:
        t = tarfile.open(fileobj=io.BytesIO(layer))
    except tarfile.ReadError:  # an OCI blob that is no layer (config, manifest): scan its bytes
        return ["host-only CA certificate in an image blob"] if any(n in layer for n in needles) else []
    with t:
        for m in t:
            if m.name.endswith("ca.pem") or "stackhub-ca" in m.name:
                found.append(f"file named like the build CA: {m.name}")
            if not m.isfile() or m.size == 0:
                continue
            data = t.extractfile(m).read()
            if hashlib.sha256(data).hexdigest() == bundle_sha:
                found.append(f"copy of the host CA bundle: {m.name}")
            elif any(n in data for n in needles):
                found.append(f"host-only CA certificate inside {m.name}")
    return found


def _check_no_ca(client, ref: str) -> None:
    try:
        bundle = open(HOST_CA, "rb").read()
    except OSError as e:
        pytest.fail(f"no host CA bundle at {HOST_CA} ({e.strerror}): this check looks for copies of it; "
                    "install Debian's ca-certificates")
    bundle_sha = hashlib.sha256(bundle).hexdigest()
    # certificates added to the host's bundle locally (e.g. a proxy's CA): not Mozilla's public list
    # on the host, nor Debian's list in the image
    public = _pem_blocks(
        client.containers.run(ref, ["sh", "-c", f"cat {HOST_CA} 2>/dev/null || true"], remove=True, entrypoint=[])
    )
    for f in glob.glob("/usr/share/ca-certificates/mozilla/*.crt"):
        public |= _pem_blocks(open(f, "rb").read())
    needles = [b"\n".join(p.split(b"\n")[1:3]) for p in _pem_blocks(bundle) - public]

    history = json.dumps(client.api.history(ref)) + json.dumps(client.images.get(ref).attrs["Config"])
    assert "ca.pem" not in history and "PIP_CERT" not in history and "cafile" not in history, history
    findings = []
    layers = 0
    with tempfile_tar(client, ref) as saved:
        for m in saved:
            # the classic `docker save` layout (<id>/layer.tar) or the OCI one (blobs/sha256/<digest>)
            if not m.isfile() or not (m.name.endswith("layer.tar") or m.name.startswith("blobs/sha256/")):
                continue
            key = m.name
            if key not in _SEEN_LAYERS:
                _SEEN_LAYERS[key] = _layer_findings(saved.extractfile(m).read(), needles, bundle_sha)
            findings += _SEEN_LAYERS[key]
            layers += 1
    assert layers > 0, f"no layers found in `docker save {ref}`"
    assert findings == []


class tempfile_tar:
    """``docker save`` of one image to a temporary file, opened as a tar."""

    def __init__(self, client, ref):
        import tempfile

        self._f = tempfile.TemporaryFile()
        for chunk in client.images.get(ref).save(chunk_size=1 << 20):
            self._f.write(chunk)
        self._f.seek(0)

    def __enter__(self):
        self._t = tarfile.open(fileobj=self._f)
        return self._t

    def __exit__(self, *exc):
        self._t.close()
        self._f.close()


def test_no_ca_bundle_in_any_layer(client, stack):
    _check_no_ca(client, stack[1])


def test_ca_check_finds_a_leaked_bundle(client):
    """The check above can fail: an image with the bundle copied in is caught."""
    base = f"{img.BASE_REPO}:{img.DEBIAN_SUITE}"
    require_image(client, base)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(HOST_CA, arcname="copied.crt")
    c = client.containers.create(base, ["true"])
    leaked = None
    try:
        c.put_archive("/root", buf.getvalue())
        leaked = c.commit(repository="stackhub-test/leak", tag=uuid.uuid4().hex[:8])
        with pytest.raises(AssertionError, match="copy of the host CA bundle: root/copied.crt"):
            _check_no_ca(client, leaked.id)
    finally:
        c.remove(force=True)
        if leaked is not None:
            client.images.remove(leaked.id, force=True)


def test_hub_image(client):
    ref = f"{img.HUB_REPO}:{img.hub_version()}"
    require_image(client, ref, "python -m spawner.build.images build-hub")
    out = client.containers.run(
        ref, ["sh", "-c", "configurable-http-proxy --version && python -c 'import spawner, jupyterhub; "
                          "print(jupyterhub.__version__)' && pwd"], remove=True,
    ).decode()
    import jupyterhub

    # configurable-http-proxy 5.3.0, then the same JupyterHub as the host tools (one constraints.txt)
    assert "5.3.0" in out and f"\n{jupyterhub.__version__}\n" in out and "/srv/stackhub" in out, out
    assert not client.images.get(ref).attrs["Config"].get("Volumes")  # no anonymous volume per hub restart
    _check_no_ca(client, ref)


def test_unbuildable_tag_names_buildable_ones_and_tags_nothing(client):
    before = {t for i in client.images.list(name=img.STACK_REPO) for t in i.tags}
    p = subprocess.run(
        ["python", "-m", "spawner.build.images", "build", "--recommended", "", "w_2026_44"],
        capture_output=True, text=True, timeout=120, cwd=str(img.REPO),
    )
    assert p.returncode == 1
    assert "cannot build 'w_2026_44'" in p.stderr and "Buildable tags: w_2026_43" in p.stderr, p.stderr
    after = {t for i in client.images.list(name=img.STACK_REPO) for t in i.tags}
    assert after == before
