"""Smoke test of the single-node Kubernetes that scripts/k8s-node.sh builds and runs here.

In `make test` (STACKHUB_K8S_TESTS=1), or alone:
    sudo .venv/bin/python -m pytest -m k8s tests/integration/test_k8s_node.py

It brings the node up (cold: ~10 min of Go builds once; warm: about a minute), loads a stack image,
runs a pod from it as uid 1000 with a PVC of the default StorageClass, checks the stack, DNS, the
API's TLS and a Service from inside the pod, deletes the pod and checks that the PVC stays. If the node was down
before, it is brought down again at the end.
"""
import json
import os
import time
from pathlib import Path

import pytest

from .k8snode import SCRIPT, run

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

IMAGE = os.environ.get("STACKHUB_K8S_TEST_IMAGE", "stackhub/lsst-stack:w_2026_43")
NS = "stackhub-smoke"
PVC = "smoke-home"
POD = "smoke-stack"


@pytest.fixture(scope="module")
def node(k8s_node):
    return k8s_node


def kubectl(env, *args, check=True, timeout=300, input=None):
    return run("kubectl", *args, env=env, check=check, timeout=timeout, input=input)


def pod_manifest():
    volume_mount = {"name": "home", "mountPath": "/home/lsst"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS, "labels": {"app": POD}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            # the host-path provisioner makes root-owned 0750 directories: give the volume to uid 1000
            "initContainers": [{
                "name": "own-home", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "chown 1000:1000 /home/lsst && chmod 0700 /home/lsst"],
                "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}},
                "volumeMounts": [volume_mount],
            }],
            "containers": [{
                "name": "stack", "image": IMAGE, "imagePullPolicy": "Never",
                # something to reach through a Service: the stack's python serving /tmp
                "command": ["python", "-m", "http.server", "8888", "--directory", "/tmp"],
                "env": [{"name": "HOME", "value": "/home/lsst"}],
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
                "volumeMounts": [volume_mount],
            }],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": PVC}}],
        },
    }


def apply(env, obj):
    kubectl(env, "apply", "-f", "-", input=json.dumps(obj))


def in_pod(env, script, timeout=120):
    return kubectl(env, "-n", NS, "exec", POD, "-c", "stack", "--", "bash", "-c", script, timeout=timeout).stdout


def test_stack_pod_with_pvc_dns_and_api(node):
    env = node
    t = time.monotonic()
    run(SCRIPT, "load", IMAGE, timeout=900)
    print(f"load {IMAGE}: {time.monotonic() - t:.0f} s")

    kubectl(env, "get", "node", "stackhub-node")
    storage_classes = json.loads(kubectl(env, "get", "storageclass", "-o", "json").stdout)["items"]
    default = [sc for sc in storage_classes
               if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert [sc["provisioner"] for sc in default] == ["kubernetes.io/host-path"]

    apply(env, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kubectl(env, "-n", NS, "delete", "pod", POD, "--ignore-not-found", "--wait=true")
    apply(env, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "smoke-web", "namespace": NS},
                "spec": {"selector": {"app": POD}, "ports": [{"port": 80, "targetPort": 8888}]}})
    apply(env, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": PVC, "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    # the ServiceAccount admission needs the namespace's `default` ServiceAccount
    deadline = time.monotonic() + 60
    while kubectl(env, "-n", NS, "get", "serviceaccount", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount in the new namespace"
        time.sleep(0.5)
    t = time.monotonic()
    apply(env, pod_manifest())
    waited = kubectl(env, "-n", NS, "wait", "--for=condition=Ready", f"pod/{POD}", "--timeout=240s", check=False)
    if waited.returncode != 0:
        desc = kubectl(env, "-n", NS, "describe", "pod", POD, check=False).stdout
        pytest.fail(f"pod not Ready: {waited.stderr}\n{desc[-3000:]}")
    print(f"pod Ready in {time.monotonic() - t:.1f} s")

    pvc = json.loads(kubectl(env, "-n", NS, "get", "pvc", PVC, "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["storageClassName"] == default[0]["metadata"]["name"]

    # non-root, home on the volume and writable
    out = in_pod(env, "id -u; id -g; touch ~/written-by-pod && stat -c '%u %a' ~")
    assert out.split() == ["1000", "1000", "1000", "700"], out

    # the stack, set up the way terminals and kernels set it up
    out = in_pod(env, "source /opt/lsst/software/stack/loadLSST.bash && setup lsst_distrib && "
                      "python -c 'import lsst.daf.butler as b; print(\"butler-ok\", b.__file__)'")
    assert "butler-ok /opt/lsst/software/stack" in out, out

    # cluster DNS (search path of the pod's resolv.conf) and the API's TLS with Python's ssl
    out = in_pod(env, "python -c \"import socket; print(socket.gethostbyname('kubernetes.default'))\"")
    assert out.strip() == "10.96.0.1", out
    out = in_pod(env, "python -c \"import json, ssl, urllib.request; "
                      "ctx = ssl.create_default_context(cafile='/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'); "
                      "print(json.load(urllib.request.urlopen('https://kubernetes.default.svc/version', context=ctx))"
                      "['gitVersion'])\"")
    assert out.strip() == "v1.34.4", out
    # a Service by its DNS name, back to the same pod (kube-proxy, hairpin on the bridge)
    out = in_pod(env, "python -c \"import urllib.request; "
                      "print(urllib.request.urlopen('http://smoke-web.stackhub-smoke.svc.cluster.local/', timeout=10).status)\"")
    assert out.strip() == "200", out

    # stop: the pod goes, the claim and its data stay
    kubectl(env, "-n", NS, "delete", "pod", POD, "--wait=true", "--timeout=120s")
    assert kubectl(env, "-n", NS, "get", "pod", POD, check=False).returncode != 0
    pvc = json.loads(kubectl(env, "-n", NS, "get", "pvc", PVC, "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound"
    pv = json.loads(kubectl(env, "get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    assert (Path(pv["spec"]["hostPath"]["path"]) / "written-by-pod").exists()
