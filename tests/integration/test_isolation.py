"""Network isolation of user servers, tried from inside a user's container (docs/security.md).

A user's terminal reaches the hub API and nothing else of the deployment: not the proxy's API, not
the hub's services, not another user's server, not link-local or private addresses, not the host.
Each "not reachable" is paired with a proof that the target is there (from the hub, or the host),
so a test cannot pass only because nothing listens.
"""

import ipaddress
import json
import socket
import subprocess
import textwrap
import uuid

import pytest
import requests

from spawner.deploy import isolation
from spawner.core.names import HUB_PORT, PROXY_API_PORT, SESSIONS_PORT
from .hubfixture import OWN, container_name

HUB_NAME, PROXY_NAME, PROXY_API_HOST = OWN.hub, OWN.proxy, OWN.proxy_api

from .conftest import TEST_USERS

PROBE = textwrap.dedent("""
    import json, socket, sys, urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def tcp(host, port):
        try:
            with socket.create_connection((host, port), timeout=2):
                return "open"
        except socket.timeout:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as e:
            return f"error: {e}"

    def http(url):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except Exception as e:
            return f"error: {e}"

    def resolve(name):
        try:
            return socket.gethostbyname(name)
        except OSError as e:
            return f"error: {e}"

    jobs = json.loads(sys.argv[1])
    with ThreadPoolExecutor(len(jobs) or 1) as pool:
        results = list(pool.map(lambda j: globals()[j[0]](*j[1:]), jobs))
    print(json.dumps(results))
""")


def probe(container, jobs, user="1000"):
    """Run the probes in ``container`` (as the user); a list of results in the order of ``jobs``."""
    code, out = container.exec_run(["python3", "-c", PROBE, json.dumps(jobs)], user=user)
    assert code == 0, out.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


def address(container, network):
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def tagged_rules(family, tag, counters=False):
    binary = {"ipv4": "iptables", "ipv6": "ip6tables"}[family]
    lines = []
    for chain in isolation.CHAINS[family]:
        listing = subprocess.run([binary, "-w", "-S", chain, *(["-v"] if counters else [])],
                                 capture_output=True, text=True, check=True).stdout
        lines += isolation.tagged_lines(listing, tag)
    return lines


def drop_counter(tag, why):
    """Packets the DOCKER-USER rule commented ``why`` has matched."""
    for line in tagged_rules("ipv4", tag, counters=True):
        if f"{tag} {why}" in line and line.split()[1] == "DOCKER-USER":
            tokens = line.split()
            return int(tokens[tokens.index("-c") + 1])
    raise AssertionError(f"no rule {why!r}")


@pytest.fixture(scope="module")
def two_servers(hub, stack_tags):
    a, b = f"iso-a-{uuid.uuid4().hex[:6]}", f"iso-b-{uuid.uuid4().hex[:6]}"
    for name in (a, b):
        TEST_USERS.add(name)
        hub.create_user(name)
    hub.spawn(a, {"image_tag": stack_tags[0]})
    hub.spawn(b, {"image_tag": stack_tags[0]})
    yield a, b
    for name in (a, b):
        hub.api("DELETE", f"/users/{name}/server")


def test_a_user_reaches_the_hub_api_and_nothing_else_of_the_deployment(hub, two_servers):
    a, b = two_servers
    cfg = hub.deployment.cfg
    net = cfg.hub.network
    c_a, c_b = (hub.client.containers.get(container_name(n)) for n in (a, b))
    hub_c, proxy_c = hub.client.containers.get(HUB_NAME), hub.client.containers.get(PROXY_NAME)
    hub_ip, proxy_ip, b_ip = address(hub_c, net), address(proxy_c, net), address(c_b, net)
    gateway = hub.client.networks.get(net).attrs["IPAM"]["Config"][0]["Gateway"]
    courses_port = cfg.courses.service_port

    (api, proxy_api, proxy_api_name, sessions, courses, other_user, proxy_public, metadata,
     host_gateway) = probe(c_a, [
        ["http", f"http://{HUB_NAME}:{HUB_PORT}/hub/api"],
        ["tcp", proxy_ip, PROXY_API_PORT],
        ["resolve", PROXY_API_HOST],
        ["tcp", hub_ip, SESSIONS_PORT],
        ["tcp", hub_ip, courses_port],
        ["tcp", b_ip, 8888],
        ["tcp", proxy_ip, 8443],
        ["tcp", "169.254.169.254", 80],
        ["tcp", gateway, hub.deployment.cfg.hub.https_port],
    ])
    assert api == 200
    layout = isolation.fixed_addresses(hub.client.networks.get(net).attrs["IPAM"]["Config"][0]["Subnet"])
    assert (hub_ip, proxy_ip) == (layout["hub"], layout["proxy"]), "the rules name these addresses"
    assert ipaddress.ip_address(b_ip) in ipaddress.ip_network(layout["ip_range"])
    assert proxy_api != "open" and proxy_public != "open"
    assert proxy_api_name.startswith("error"), "the proxy's API name resolves only on the api network"
    assert sessions != "open" and courses != "open"
    assert other_user != "open"
    assert metadata != "open"
    assert host_gateway != "open", "the host (the bridge's gateway) must not answer users"

    # ... while each target is there: the hub reaches the proxy API, its services and b's server
    from_hub = probe(hub_c, [["tcp", PROXY_API_HOST, PROXY_API_PORT], ["tcp", hub_ip, SESSIONS_PORT],
                             ["tcp", hub_ip, courses_port], ["tcp", b_ip, 8888],
                             ["tcp", proxy_ip, PROXY_API_PORT]], user="0")
    assert from_hub[:4] == ["open"] * 4, from_hub
    assert from_hub[4] == "refused", "the proxy's API listens on the api network only"
    with socket.create_connection((gateway, hub.deployment.cfg.hub.https_port), timeout=5):
        pass  # the host answers there to itself


def test_link_local_and_private_addresses_are_dropped_by_the_rules(hub, two_servers):
    a, _ = two_servers
    tag = isolation.rule_tag(hub.deployment.cfg)
    c_a = hub.client.containers.get(container_name(a))
    before = {w: drop_counter(tag, w) for w in ("link-local and cloud metadata", "private")}
    results = probe(c_a, [["tcp", "169.254.169.254", 80], ["tcp", "10.10.10.10", 80], ["tcp", "192.168.77.1", 80]])
    assert all(r == "timeout" for r in results), results
    assert drop_counter(tag, "link-local and cloud metadata") > before["link-local and cloud metadata"]
    assert drop_counter(tag, "private") >= before["private"] + 2


def test_dns_still_works_through_a_private_resolver(hub, two_servers):
    a, _ = two_servers
    try:
        socket.gethostbyname("pypi.org")
    except OSError:
        pytest.fail("this host resolves no public names, so DNS through the users network cannot be shown")
    name, = probe(hub.client.containers.get(container_name(a)), [["resolve", "pypi.org"]])
    assert not name.startswith("error"), name


def test_the_browser_path_through_the_proxy_still_works(hub, two_servers):
    a, _ = two_servers
    r = requests.get(f"{hub.origin(a)}user/{a}/api/status", headers={"Authorization": f"token {hub.token}"},
                     verify=hub.ca, timeout=30)
    assert r.status_code == 200, r.text
    # the hub's services: a page routed by the proxy to the service, which sends the browser to log in
    r = requests.get(f"{hub.url}services/stackhub-sessions/", verify=hub.ca, timeout=30, allow_redirects=False)
    assert r.status_code == 302 and "oauth2/authorize" in r.headers["Location"], (r.status_code, r.headers)
    r = hub.api("GET", "/services")
    assert r.status_code == 200 and set(r.json()) >= {"stackhub-sessions", "idle-culler"}


def test_a_restarted_hub_keeps_its_address_so_the_rules_still_fit(hub, two_servers):
    a, _ = two_servers
    hub_c = hub.client.containers.get(HUB_NAME)
    before = address(hub_c, hub.deployment.cfg.hub.network)
    hub_c.restart(timeout=10)
    hub.deployment.wait_ready(hub.tls)
    assert address(hub_c, hub.deployment.cfg.hub.network) == before
    api, = probe(hub.client.containers.get(container_name(a)), [["http", f"http://{HUB_NAME}:{HUB_PORT}/hub/api"]])
    assert api == 200
    r = requests.get(f"{hub.origin(a)}user/{a}/api/status", headers={"Authorization": f"token {hub.token}"},
                     verify=hub.ca, timeout=30)
    assert r.status_code == 200, r.text


def expected_rules(hub):
    rules = isolation.firewall_rules(hub.deployment.cfg, hub.deployment.endpoints())
    return {f: len([r for r in rules if r.family == f]) for f in hub.deployment._families()}


def test_up_twice_keeps_one_set_of_rules_and_down_removes_them(hub, two_servers):
    """Last in this module: it stops every server (``down``)."""
    dep, tag = hub.deployment, isolation.rule_tag(hub.deployment.cfg)
    want = expected_rules(hub)
    assert {f: len(tagged_rules(f, tag)) for f in want} == want
    dep.apply_firewall()
    assert {f: len(tagged_rules(f, tag)) for f in want} == want
    dep.down()
    assert {f: len(tagged_rules(f, tag)) for f in want} == {f: 0 for f in want}
    dep.up()
    dep.up()
    assert {f: len(tagged_rules(f, tag)) for f in want} == expected_rules(hub)
