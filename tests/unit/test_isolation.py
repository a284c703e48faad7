"""The network isolation as data: networks, iptables rules, the iptables-restore script (spawner.deploy.isolation)."""

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from spawner.deploy import isolation
from spawner.core.config import StackhubConfig
from spawner.deploy.single_host import HostPaths, proxy_container
from spawner.core.names import Deployment
from spawner.core.names import HUB_PORT, PROXY_API_PORT
from spawner.hub.apply import HubInputs, HubPaths, update_proxy

PROXY_API_HOST = Deployment().proxy_api
from spawner.deploy.tls import TLSFiles

EP = isolation.Endpoints(bridge="br-0123456789ab", hub="172.30.0.3", proxy="172.30.0.2",
                         dns=("10.255.255.53",), host_networks=("192.0.2.0/24", "172.17.0.0/16"))
USER, OTHER = "172.30.0.7", "172.30.0.8"


def cfg(**network):
    return StackhubConfig.model_validate({"spawner": {"network": network}})


# -- a first-match evaluator of the rules, for the packets the design is about ------------------

def _matches(args, pkt):
    a, k, neg = list(args), 0, False
    while k < len(a):
        opt = a[k]
        if opt == "!":
            neg, k = True, k + 1
            continue
        if opt == "-j":
            return True
        if opt in ("-m", "--comment"):
            k += 2
            continue
        val = a[k + 1]
        if opt == "-i":
            ok = pkt["in"] == val
        elif opt == "-o":
            ok = pkt["out"] == val
        elif opt in ("-s", "-d"):
            ok = ipaddress.ip_address(pkt["src" if opt == "-s" else "dst"]) in ipaddress.ip_network(val)
        elif opt == "-p":
            ok = pkt.get("proto", "tcp") == val
        elif opt == "--dport":
            ok = str(pkt.get("port")) == val
        elif opt == "--ctstate":
            ok = pkt.get("state", "NEW") in val.split(",")
        else:
            raise AssertionError(f"evaluator does not know {opt}")
        if ok == neg:
            return False
        neg, k = False, k + 2
    return True


def verdict(rules, chain, pkt, family="ipv4"):
    """First matching rule's target in ``chain`` (None: no rule of ours matched)."""
    for r in rules:
        if r.family == family and r.chain == chain and _matches(r.args, pkt):
            return r.args[-1]
    return None


def fwd(src, dst, port=None, proto="tcp", out="br-0123456789ab", state="NEW"):
    return {"in": EP.bridge, "out": out, "src": src, "dst": dst, "port": port, "proto": proto, "state": state}


@pytest.mark.parametrize("pkt,expected,why", [
    (fwd(USER, EP.hub, HUB_PORT), "ACCEPT", "users reach the hub API"),
    (fwd(USER, EP.hub, 8090), "DROP", "not the sessions service"),
    (fwd(USER, EP.hub, 10102), "DROP", "not the course service"),
    (fwd(USER, EP.proxy, PROXY_API_PORT), "DROP", "not the proxy API"),
    (fwd(USER, EP.proxy, 8443), "DROP", "not the proxy at all"),
    (fwd(USER, OTHER, 8888), "DROP", "not another user's server"),
    (fwd(USER, "169.254.169.254", 80, out="eth0"), "DROP", "no cloud metadata"),
    (fwd(USER, "10.1.2.3", 443, out="eth0"), "DROP", "no private range"),
    (fwd(USER, "172.17.0.5", 22, out="docker0"), "DROP", "no other Docker network"),
    (fwd(USER, "192.168.1.1", 80, out="eth0"), "DROP", "no LAN router"),
    (fwd(USER, "100.64.0.1", 80, out="eth0"), "DROP", "no CGNAT range"),
    (fwd(USER, "192.0.2.9", 22, out="eth0"), "DROP", "not the host's LAN"),
    (fwd(USER, "10.255.255.53", 53, "udp", out="eth0"), "RETURN", "DNS to the engine's resolver"),
    (fwd(USER, "10.255.255.53", 80, out="eth0"), "DROP", "the resolver on other ports"),
    (fwd(USER, "151.101.0.223", 443, out="eth0"), None, "the internet (Docker's rules accept)"),
    (fwd(EP.hub, USER, 8888), "ACCEPT", "the hub reaches servers"),
    (fwd(EP.proxy, USER, 8888), "ACCEPT", "the proxy routes to servers"),
    (fwd(EP.hub, "10.9.9.9", 443, out="eth0"), "RETURN", "the hub reaches a private IdP"),
    (fwd(USER, EP.hub, 45000, state="ESTABLISHED"), "RETURN", "a server's replies"),
])
def test_forwarded_traffic_from_the_users_network(pkt, expected, why):
    assert verdict(isolation.firewall_rules(cfg(), EP), "DOCKER-USER", pkt) == expected, why


def host(src, port, dst="172.30.0.1", state="NEW"):
    return {"in": EP.bridge, "out": None, "src": src, "dst": dst, "port": port, "state": state}


def test_the_host_itself_is_closed_to_users_but_replies_and_the_hub_pass():
    rules = isolation.firewall_rules(cfg(), EP)
    assert verdict(rules, "INPUT", host(USER, 8443)) == "DROP"  # the bridge's gateway
    assert verdict(rules, "INPUT", host(USER, 22, dst="192.0.2.2")) == "DROP"  # the host's LAN address
    assert verdict(rules, "INPUT", host(EP.proxy, 2375)) == "DROP"
    assert verdict(rules, "INPUT", host(EP.hub, 9443)) is None  # e.g. an IdP on the host; the site's rules decide
    assert verdict(rules, "INPUT", host(EP.proxy, 44000, state="ESTABLISHED")) is None  # docker-proxy's replies


def test_no_ipv6_leaves_the_users_bridge():
    rules = isolation.firewall_rules(cfg(), EP)
    v6 = [r for r in rules if r.family == "ipv6"]
    assert {(r.chain, r.args) for r in v6} == {("FORWARD", ("-i", EP.bridge, "-j", "DROP")),
                                               ("INPUT", ("-i", EP.bridge, "-j", "DROP"))}


def test_every_rule_is_bound_to_the_users_bridge():
    for r in isolation.firewall_rules(cfg(allowPrivateCidrs=["10.1.2.0/24"], internet=False), EP):
        assert r.args[:2] == ("-i", EP.bridge), r


def test_the_brief_ranges_are_all_blocked():
    blocked = [ipaddress.ip_network(c) for c, _ in isolation.BLOCKED_IPV4]
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"):
        assert any(ipaddress.ip_network(cidr).subnet_of(b) for b in blocked), cidr


def test_allow_list_opens_a_range_and_the_host_in_it_but_never_the_users_network():
    rules = isolation.firewall_rules(cfg(allowPrivateCidrs=["10.1.2.0/24", "172.16.0.0/12"]), EP)
    assert verdict(rules, "DOCKER-USER", fwd(USER, "10.1.2.3", 443, out="eth0")) == "RETURN"
    assert verdict(rules, "DOCKER-USER", fwd(USER, "10.1.3.3", 443, out="eth0")) == "DROP"
    assert verdict(rules, "INPUT", host(USER, 2049, dst="10.1.2.1")) == "ACCEPT"
    # 172.16/12 holds the users network itself: still nothing but the hub API there
    assert verdict(rules, "DOCKER-USER", fwd(USER, OTHER, 8888)) == "DROP"
    assert verdict(rules, "DOCKER-USER", fwd(USER, EP.proxy, PROXY_API_PORT)) == "DROP"


def test_internet_off_leaves_the_hub_api_and_the_allow_list():
    rules = isolation.firewall_rules(cfg(internet=False, allowPrivateCidrs=["10.1.2.0/24"]), EP)
    assert verdict(rules, "DOCKER-USER", fwd(USER, "151.101.0.223", 443, out="eth0")) == "DROP"
    assert verdict(rules, "DOCKER-USER", fwd(USER, "10.1.2.3", 443, out="eth0")) == "RETURN"
    assert verdict(rules, "DOCKER-USER", fwd(USER, EP.hub, HUB_PORT)) == "ACCEPT"
    assert verdict(rules, "DOCKER-USER", fwd(EP.hub, "151.101.0.223", 443, out="eth0")) == "RETURN"


def test_rules_golden(golden):
    tag = isolation.rule_tag(cfg())
    rules = isolation.firewall_rules(cfg(allowPrivateCidrs=["10.1.2.0/24"]), EP)
    script = isolation.restore_script([r for r in rules if r.family == "ipv4"], [], tag)
    golden("isolation_rules_ipv4", script.splitlines())


def test_restore_script_deletes_the_old_rules_then_inserts_in_order():
    tag = "stackhub:stackhub-users"
    old = ['-A DOCKER-USER -i br-x -j DROP -m comment --comment "stackhub:stackhub-users old"']
    rules = [isolation.Rule("ipv4", "DOCKER-USER", ("-i", "br-y", "-j", "ACCEPT"), "a"),
             isolation.Rule("ipv4", "INPUT", ("-i", "br-y", "-j", "DROP"), "b"),
             isolation.Rule("ipv4", "DOCKER-USER", ("-i", "br-y", "-j", "DROP"), "c")]
    assert isolation.restore_script(rules, old, tag).splitlines() == [
        "*filter",
        '-D DOCKER-USER -i br-x -j DROP -m comment --comment "stackhub:stackhub-users old"',
        '-I DOCKER-USER 1 -i br-y -m comment --comment "stackhub:stackhub-users a" -j ACCEPT',
        '-I INPUT 1 -i br-y -m comment --comment "stackhub:stackhub-users b" -j DROP',
        '-I DOCKER-USER 2 -i br-y -m comment --comment "stackhub:stackhub-users c" -j DROP',
        "COMMIT",
    ]


def test_tagged_lines_find_this_deployment_only():
    listing = "\n".join([
        "-N DOCKER-USER",
        '-A DOCKER-USER -i br-a -m comment --comment "stackhub:stackhub-users users reach the hub API" -j ACCEPT',
        '-A DOCKER-USER -i br-b -m comment --comment "stackhub:stackhub-users2 other deployment" -j DROP',
        "-A DOCKER-USER -m comment --comment stackhub:stackhub-users -j DROP",
        '-A DOCKER-USER -i br-c -m comment --comment "a site rule" -j DROP',
        "-A DOCKER-USER -j RETURN",
    ])
    found = isolation.tagged_lines(listing, "stackhub:stackhub-users")
    assert [line.split()[2] for line in found] == ["-i", "-m"] and len(found) == 2


def test_networks():
    users, api = isolation.networks(cfg())
    assert users.as_docker() == {"name": "stackhub-users", "driver": "bridge", "internal": False,
                                 "options": {"com.docker.network.bridge.enable_icc": "false"},
                                 "labels": {"stackhub.role": "users-network"}}
    assert api.as_docker()["internal"] is True and api.name == "stackhub-internal"
    fixed = {"IPAM": {"Config": [{"Subnet": "172.30.0.0/16", "IPRange": "172.30.128.0/17"}]}}
    assert users.mismatch({"Internal": False, "Options": {}, **fixed}) == "com.docker.network.bridge.enable_icc=unset, wanted false"
    assert users.mismatch({"Internal": False, "Options": {"com.docker.network.bridge.enable_icc": "false"}, **fixed}) is None
    assert users.mismatch({"Internal": False, "Options": {"com.docker.network.bridge.enable_icc": "false"},
                           "IPAM": {"Config": [{"Subnet": "172.30.0.0/16"}]}}) == "no fixed addresses for the hub and the proxy"
    assert api.mismatch({"Internal": False}) is not None
    # without the firewall the hub could not pass enable_icc=false
    assert isolation.networks(cfg(firewall=False))[0].options == {}


def test_config_checks_the_allow_list():
    assert cfg(allowPrivateCidrs=["10.1.2.3/24"]).spawner.network.allow_private_cidrs == ["10.1.2.0/24"]
    with pytest.raises(ValidationError, match="not a CIDR"):
        cfg(allowPrivateCidrs=["10.1.2"])
    with pytest.raises(ValidationError, match="IPv4 only"):
        cfg(allowPrivateCidrs=["fd00::/8"])
    with pytest.raises(ValidationError, match="two different networks"):
        StackhubConfig.model_validate({"hub": {"network": "x", "apiNetwork": "x"}})


def test_proxy_api_listens_on_the_api_network_only_and_the_hub_uses_it(tmp_path):
    kw = proxy_container(StackhubConfig(), HostPaths(Path("/x/var")), TLSFiles(None, Path("/c"), Path("/k")))
    script = kw["command"][-1]
    assert f"--api-ip {PROXY_API_HOST} --api-port {PROXY_API_PORT}" in script and "0.0.0.0 --api-port" not in script
    assert kw["network"] == "stackhub-users"
    class C(dict):
        def __getattr__(self, k):
            return self.setdefault(k, C())
    c = C()
    update_proxy(c, StackhubConfig(), HubPaths(secrets=tmp_path), HubInputs(secrets={"proxy-token": "t"}))
    assert c.ConfigurableHTTPProxy.api_url == f"http://{PROXY_API_HOST}:{PROXY_API_PORT}"


def test_nameservers():
    text = "# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver fd00::1\noptions edns0\n"
    assert isolation.nameservers(text) == ["10.255.255.53"]


def test_hub_and_proxy_have_fixed_addresses_outside_the_range_servers_get():
    layout = isolation.fixed_addresses("172.30.0.0/16")
    assert layout == {"subnet": "172.30.0.0/16", "gateway": "172.30.0.1", "hub": "172.30.0.2",
                      "proxy": "172.30.0.3", "ip_range": "172.30.128.0/17"}
    servers = ipaddress.ip_network(layout["ip_range"])
    assert ipaddress.ip_address(layout["hub"]) not in servers and ipaddress.ip_address(layout["proxy"]) not in servers
    assert isolation.fixed_addresses("192.168.16.0/20")["ip_range"] == "192.168.24.0/21"
    with pytest.raises(ValueError):
        isolation.fixed_addresses("10.0.0.0/30")
