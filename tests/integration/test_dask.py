"""Dask in a running server (docs/dask.md), through the hub like a user: a kernel started over the
hub's proxy runs a LocalCluster whose workers follow the chosen size; its dashboard answers at
/user/NAME/proxy/8787/status to that user and 403 to another; the lab's Dask panel can run a
cluster and show its dashboard; the course notebook courses/dask-analysis runs headless and its
check holds.

The stack images are ``stackhub/lsst-stack`` (``make stack-images``); while a changed recipe is
tested beside others' images, ``STACKHUB_TEST_STACK_REPOSITORY`` names another repository
(``python -m spawner.build.images build --repository ...``) and this module's hub uses it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket

from spawner.core.config import StackhubConfig, memory_bytes

from .hubfixture import TEST_CONFIG, container_name

REPO_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = os.environ.get("STACKHUB_TEST_STACK_REPOSITORY", "stackhub/lsst-stack")
SIZES = {s.name: s for s in StackhubConfig().sizes}
COURSE = "dask-analysis"
NOTEBOOK = "coadd-with-dask.ipynb"


@pytest.fixture(scope="module")
def dask_hub(hub):
    """The session's hub, on the repository under test; back to the test default afterwards."""
    changed = REPOSITORY != StackhubConfig().stack.repository
    if changed:
        hub.reconfigure({"stack": {**TEST_CONFIG["stack"], "repository": REPOSITORY}})
    try:
        image = hub.client.images.get(f"{REPOSITORY}:recommended")
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        pytest.fail(f"no {REPOSITORY}:recommended: run `make stack-images`")
    versions = json.loads(image.labels.get("stackhub.versions", "{}"))
    assert versions, image.labels
    yield hub
    if changed:
        hub.reconfigure()


def user_token(hub, name):
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "dask test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def as_user(hub, token, method, path, **kw):
    kw.setdefault("timeout", 60)
    return requests.request(method, url_of(hub, path), headers={"Authorization": f"token {token}"},
                            verify=hub.ca, allow_redirects=False, **kw)


def url_of(hub, path: str) -> str:
    """``/user/NAME/...`` on NAME's own origin (subdomain mode), anything else on the hub's."""
    parts = path.lstrip("/").split("/")
    base = hub.origin(parts[1]) if parts[0] == "user" else hub.url
    return base + path.lstrip("/")


class Kernel:
    """An LSST kernel of a user's server, driven over the hub's proxy as JupyterLab does
    (REST to start it, the websocket channels to execute)."""

    def __init__(self, hub, name, token):
        self.hub, self.name, self.token = hub, name, token
        r = as_user(hub, token, "POST", f"/user/{name}/api/kernels", json={"name": "lsst"})
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]
        url = url_of(hub, f"/user/{name}/api/kernels/{self.id}/channels").replace("https://", "wss://", 1)
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {token}"],
                                              origin=hub.origin(name).rstrip("/"), sslopt={"ca_certs": hub.ca}, timeout=300)
        self.session = uuid.uuid4().hex

    def run(self, code, timeout=300) -> str:
        """Execute ``code``; its stdout, or AssertionError with the kernel's traceback."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.name, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError("kernel error:\n" + "\n".join(content.get("traceback", [])))
            elif kind == "status" and content.get("execution_state") == "idle":
                return "".join(out)
        raise AssertionError(f"no answer from the kernel in {timeout}s; so far: {''.join(out)}")

    def close(self):
        self.ws.close()
        as_user(self.hub, self.token, "DELETE", f"/user/{self.name}/api/kernels/{self.id}")


START_CLUSTER = """
import json, os
import dask.array as da
from dask.distributed import Client, LocalCluster
cluster = LocalCluster()
client = Client(cluster)
workers = client.scheduler_info()["workers"].values()
x = da.arange(4_000_000, chunks=250_000).reshape(2000, 2000)
graph = (x + x.T).sum()
total = int(graph.compute())
squares = sum(client.gather(client.map(lambda v: v * v, range(10))))
print(json.dumps({
    "workers": len(workers),
    "threads": sum(w["nthreads"] for w in workers),
    "memory": sum(w["memory_limit"] for w in workers),
    "link": client.dashboard_link,
    "total": total, "tasks": len(graph.__dask_graph__()), "squares": squares,
    "worker_pids": sorted(client.run(os.getpid).values()), "kernel_pid": os.getpid(),
}))
"""


@pytest.mark.parametrize("size", ["small", "medium"])
def test_local_cluster_follows_the_size_and_its_dashboard_is_the_users_own(dask_hub, user, size):
    hub = dask_hub
    name, other = user("dask"), user("peek")
    hub.spawn(name, {"size": size})
    hub.spawn(other, {"size": "small"})
    token, other_token = user_token(hub, name), user_token(hub, other)
    kernel = Kernel(hub, name, token)
    try:
        got = json.loads(kernel.run(START_CLUSTER).strip().splitlines()[-1])
        want = SIZES[size]
        assert got["workers"] == int(want.cpu), got       # one worker per core of the size, not of the host
        assert got["threads"] == int(want.cpu), got
        assert abs(got["memory"] - memory_bytes(want.memory)) < 2**20, got   # the size's memory, shared
        n = 4_000_000
        assert got["total"] == n * (n - 1) and got["squares"] == 285 and got["tasks"] > 16, got
        assert len(set(got["worker_pids"])) == got["workers"] and got["kernel_pid"] not in got["worker_pids"]
        # the dashboard, through the hub: the link the notebook prints, the user's own credentials
        assert got["link"] == f"/user/{name}/proxy/8787/status", got
        r = as_user(hub, token, "GET", got["link"])
        assert r.status_code == 200 and "<title>Dask Diagnostic UI</title>" in r.text, (r.status_code, r.text[:300])
        r = as_user(hub, token, "GET", f"/user/{name}/proxy/8787/individual-plots.json")
        assert r.status_code == 200 and "Individual Task Stream" in r.json(), r.text[:300]
        # another user's credentials: refused by the server; none at all: sent to log in
        r = as_user(hub, other_token, "GET", got["link"])
        assert r.status_code == 403, (r.status_code, r.text[:300])
        r = requests.get(url_of(hub, got["link"]), verify=hub.ca, allow_redirects=False, timeout=30)
        assert r.status_code in (302, 303) and "/hub/" in r.headers["Location"], (r.status_code, r.headers)
        # no port of the server is published on the host
        c = hub.client.containers.get(container_name(name))
        assert not any(c.attrs["NetworkSettings"]["Ports"].values()), c.attrs["NetworkSettings"]["Ports"]
        kernel.run("client.close(); cluster.close()")
    finally:
        kernel.close()
        hub.stop(name)
        hub.stop(other)


def test_the_labs_dask_panel_runs_a_cluster_and_shows_its_dashboard(dask_hub, user):
    """The Dask panel's server side (dask-labextension): '+ NEW' starts a cluster sized like the
    server; its dashboard link is under the server's /proxy/ (so the panel opens it through
    jupyter-server-proxy, the user's own), and the panel checks notebook dashboard links from the
    browser (which carries the hub's cookies)."""
    hub = dask_hub
    name, other = user("panel"), user("peek")
    hub.spawn(name, {"size": "medium"})
    hub.spawn(other, {"size": "small"})
    token, other_token = user_token(hub, name), user_token(hub, other)
    try:
        r = as_user(hub, token, "PUT", f"/user/{name}/dask/clusters", json={})
        assert r.status_code == 200, r.text
        cluster = r.json()
        assert cluster["workers"] == 2, cluster
        link = cluster["dashboard_link"]
        assert re.fullmatch(rf"/user/{name}/proxy/\d+/status", link), cluster
        dash = link.replace("/status", "/individual-plots.json")
        deadline = time.monotonic() + 60
        while (r := as_user(hub, token, "GET", dash)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert r.status_code == 200 and "Individual Task Stream" in r.json(), (r.status_code, r.text[:300])
        assert as_user(hub, other_token, "GET", dash).status_code == 403
        r = as_user(hub, token, "GET", f"/user/{name}/lab/api/settings/dask-labextension:plugin")
        # overrides.json turns the schema's default on (JupyterLab applies overrides to the defaults)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["schema"]["properties"]["browserDashboardCheck"]["default"] is True, r.text[:500]
        r = as_user(hub, token, "DELETE", f"/user/{name}/dask/clusters/{cluster['id']}")
        assert r.status_code in (200, 204), r.text
    finally:
        hub.stop(name)
        hub.stop(other)


def publish(hub, course, directory):
    env = {**os.environ, "STACKHUB_STATE": str(hub.deployment.paths.root), "STACKHUB_CONFIG": str(hub.config_file)}
    out = subprocess.run([sys.executable, "-m", "spawner.cli.main", "course", *["publish", course, str(directory)]],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and f"{course}: published version" in out.stdout, out.stdout + out.stderr


def wait_for_courses(hub):
    """The hub answers before its managed services are routed: wait for the course service."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = requests.get(f"{hub.url}services/stackhub-courses/api/courses", verify=hub.ca, timeout=30,
                         headers={"Authorization": f"token {hub.token}"})
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith("application/json"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the course service did not answer: {r.status_code}")


def test_the_coadd_notebook_runs_headless_and_its_check_holds(dask_hub, user):
    hub = dask_hub
    wait_for_courses(hub)
    publish(hub, COURSE, REPO_ROOT / "courses" / COURSE)
    name = user("coadd")
    hub.spawn(name, {"size": "medium"})
    try:
        c = hub.client.containers.get(container_name(name))
        cmd = (f"jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=900 "
               f"--output-dir /tmp --output run ~/notebooks/{COURSE}/{NOTEBOOK}")
        code, out = c.exec_run(["bash", "-lc", cmd], user="1000", workdir=f"/home/{name}")
        assert code == 0, out.decode(errors="replace")[-3000:]
        code, out = c.exec_run(["cat", "/tmp/run.ipynb"], user="1000")
        assert code == 0, out
        cells = json.loads(out)["cells"]
        text = "".join("".join(o.get("text", "")) for cell in cells for o in cell.get("outputs", []))
        assert not [o for cell in cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        summary = json.loads(text.split("SUMMARY ", 1)[1].splitlines()[0])
        assert summary["workers"] == 2 and summary["count_serial"] == summary["count_dask"] == 400, summary
        assert summary["max_abs_coadd_difference"] < 1e-9, summary
        assert "OK: 400 of 400 sources" in cells[-1]["outputs"][0]["text"][0], cells[-1]["outputs"]
        print("workload:", summary)
    finally:
        hub.stop(name)
        r = requests.delete(f"{hub.url}services/stackhub-courses/api/courses/{COURSE}", verify=hub.ca, timeout=60,
                            headers={"Authorization": f"token {hub.token}"})
        assert r.status_code in (200, 204), r.text
