"""The single-node Kubernetes of scripts/k8s-node.sh for the `k8s` tests: bring it up (down
again afterwards if it was down), and run commands with its KUBECONFIG and PATH."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "k8s-node.sh"


def run(*args, check=True, timeout=600, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {p.returncode}\n--- stdout\n{p.stdout[-4000:]}"
                    f"\n--- stderr\n{p.stderr[-4000:]}")
    return p


def node_up():
    """Bring the node up; yield the environment for kubectl and helm; bring it down again after
    if it was down before (a generator for a fixture)."""
    if os.geteuid() != 0:
        pytest.fail("the Kubernetes node needs root (containerd, kubelet, network setup)")
    was_up = run(SCRIPT, "status", check=False).returncode == 0
    run(SCRIPT, "up", timeout=1700)
    env = dict(os.environ)
    for line in run(SCRIPT, "env").stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", os.environ["PATH"])
    yield env
    if not was_up:
        run(SCRIPT, "down", timeout=300)
