"""Documented settings, pinned on the real deployment: an operator's certificate, a host-path data
mount, the idle culler. One reconfigured hub for the module (restored, and checked, at the end)."""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pytest
from cryptography import x509

from .hubfixture import container_name

from .conftest import TEST_USERS
from .idp import issue_cert

CULL_TIMEOUT, CULL_EVERY = 60, 10


@pytest.fixture(scope="module")
def pinned(hub, tmp_path_factory):
    work = tmp_path_factory.mktemp("pins")
    # the hub's name and, in subdomain mode, the user servers' wildcard (up refuses it without)
    cert, key = issue_cert(hub.tls.ca.parent, work, "localhost", name="operator", also=("*.users.localhost",))
    key.chmod(0o644)  # read by the proxy container's user
    data = work / "hostdata"
    data.mkdir()
    (data / "catalog.txt").write_text("host path data\n")
    try:
        hub.reconfigure({
            "tls": {"certFile": str(cert), "keyFile": str(key)},
            "volumes": {"data": [{"source": str(data), "target": "/hostdata"}]},
            "culler": {"timeout": CULL_TIMEOUT, "every": CULL_EVERY},
        })
        yield hub, cert
    finally:
        hub.reconfigure()
        assert hub.api("GET", "/").status_code == 200, "the test hub did not come back after the module"


def test_operator_certificate_is_what_the_proxy_serves(pinned):
    hub, cert = pinned
    ctx = ssl.create_default_context(cafile=hub.ca)
    port = hub.deployment.cfg.hub.https_port
    with socket.create_connection(("localhost", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    assert served == x509.load_pem_x509_certificate(cert.read_bytes())


def test_host_path_data_is_mounted_read_only(pinned, stack_tags):
    hub, _ = pinned
    name = f"hostdata-{uuid.uuid4().hex[:6]}"
    TEST_USERS.add(name)
    hub.create_user(name)
    hub.spawn(name, {"image_tag": stack_tags[0], "size": "small"})
    c = hub.client.containers.get(container_name(name))
    mount = next(m for m in c.attrs["Mounts"] if m["Destination"] == "/hostdata")
    assert mount["Type"] == "bind" and mount["RW"] is False
    code, out = c.exec_run(["sh", "-c", "cat /hostdata/catalog.txt; touch /hostdata/x"], user="1000")
    assert "host path data" in out.decode() and "Read-only file system" in out.decode() and code != 0
    # the size's limits are on the real container
    host = c.attrs["HostConfig"]
    assert host["Memory"] == 2 * 1024 ** 3
    assert host["CpuQuota"] / host["CpuPeriod"] == 1.0  # DockerSpawner's cpu_limit: a CFS quota
    hub.stop(name)


def test_idle_culler_stops_an_idle_server(pinned, stack_tags):
    hub, _ = pinned
    culler = next(s for s in hub.api("GET", "/services").json().values() if s["name"] == "idle-culler")
    assert f"--timeout={CULL_TIMEOUT}" in culler["command"] and f"--cull-every={CULL_EVERY}" in culler["command"]
    name = f"idle-{uuid.uuid4().hex[:6]}"
    TEST_USERS.add(name)
    hub.create_user(name)
    hub.spawn(name, {"image_tag": stack_tags[0]})
    deadline = time.monotonic() + CULL_TIMEOUT + 4 * CULL_EVERY + 60
    while "" in hub.api("GET", f"/users/{name}").json()["servers"]:
        assert time.monotonic() < deadline, "the idle server was not culled"
        time.sleep(2)
