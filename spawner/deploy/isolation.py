"""Network isolation of user servers, as plain data: which Docker networks, which iptables rules.

Pure: (config, facts read from the engine) -> network specs, rules, ``iptables-restore`` input. The
I/O (creating networks, reading addresses, running ``iptables-restore``) is in ``deploy``.
docs/security.md ("Network isolation") explains the design; in short:

- ``hub.network`` (default ``stackhub-users``): the user containers; the hub and the proxy join it.
  Created with ``com.docker.network.bridge.enable_icc=false``, so Docker itself drops traffic between
  containers on it; the rules below let the hub and the proxy through, and users to the hub API only.
- ``hub.apiNetwork`` (default ``stackhub-internal``): ``internal``, only hub and proxy; the proxy's
  API listens on its address there alone.
- rules in ``DOCKER-USER`` (forwarded traffic) and ``INPUT`` (traffic to the host itself), every one
  on the users network's bridge and tagged with the comment ``stackhub:<network> <why>``, so ``up``
  replaces them in one ``iptables-restore`` transaction (no duplicates, no gap) and ``down`` finds
  and removes them.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from spawner.core import names
from spawner.core.config import StackhubConfig
from spawner.core.names import HUB_PORT

ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"

# IPv4 destinations a user's container may not reach unless allowPrivateCidrs opens them
# (IANA special-purpose ranges that are not the public internet)
BLOCKED_IPV4 = (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local and cloud metadata"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    internal: bool
    options: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    fixed: bool = False  # hub and proxy keep fixed addresses (see fixed_addresses)

    def as_docker(self) -> dict:
        """Keyword arguments of ``docker.client.networks.create``."""
        return {"name": self.name, "driver": "bridge", "internal": self.internal,
                "options": dict(self.options), "labels": dict(self.labels)}

    def mismatch(self, attrs: dict) -> str | None:
        """What differs between this spec and an existing network's ``attrs`` (None: it fits)."""
        if bool(attrs.get("Internal")) != self.internal:
            return f"internal={bool(attrs.get('Internal'))}, wanted {self.internal}"
        if self.fixed and not any(c.get("IPRange") for c in (attrs.get("IPAM") or {}).get("Config") or []):
            return "no fixed addresses for the hub and the proxy"
        have = attrs.get("Options") or {}
        for key, value in self.options.items():
            if have.get(key, "true" if key == ICC_OPTION else None) != value:
                return f"{key}={have.get(key, 'unset')}, wanted {value}"
        return None


def networks(cfg: StackhubConfig) -> tuple[NetworkSpec, NetworkSpec]:
    """(users network, api network). Without the firewall the hub could not reach the servers
    through enable_icc=false, so the users network then keeps Docker's default."""
    icc = {} if not cfg.spawner.network.firewall else {ICC_OPTION: "false"}
    users = NetworkSpec(cfg.hub.network, False, icc, {names.LABEL_ROLE: "users-network"}, fixed=True)
    api = NetworkSpec(cfg.hub.api_network, True, {}, {names.LABEL_ROLE: "api-network"})
    return users, api


def fixed_addresses(subnet: str) -> dict:
    """The users network's layout: the gateway, the hub and the proxy take its first three host
    addresses, and Docker hands user servers addresses from the upper half only (``ip_range``). So
    the hub's and the proxy's addresses, which the rules name, stay theirs across restarts."""
    net = ipaddress.ip_network(subnet)
    if net.version != 4 or net.prefixlen > 28:
        raise ValueError(f"users network subnet {subnet} must be IPv4 and /28 or larger")
    return {"subnet": str(net), "gateway": str(net[1]), "hub": str(net[2]), "proxy": str(net[3]),
            "ip_range": str(list(net.subnets(1))[1])}


@dataclass(frozen=True)
class Endpoints:
    """Facts of a running deployment, read from the engine and the host at ``up``."""

    bridge: str  # the users network's Linux bridge, e.g. br-0123456789ab
    hub: str  # the hub's IPv4 address on the users network
    proxy: str  # the proxy's IPv4 address on the users network
    dns: tuple[str, ...] = ()  # the engine's upstream resolvers (Docker's DNS asks them from the container)
    host_networks: tuple[str, ...] = ()  # IPv4 networks the host is directly on (its LAN)


@dataclass(frozen=True)
class Rule:
    family: str  # "ipv4" or "ipv6"
    chain: str
    args: tuple[str, ...]  # matches and target
    why: str

    def comment(self, tag: str) -> str:
        return f"{tag} {self.why}"


def rule_tag(cfg: StackhubConfig) -> str:
    """The comment prefix of this deployment's rules (one per users network)."""
    return f"stackhub:{cfg.hub.network}"


def _host(ip: str) -> str:
    return f"{ipaddress.ip_address(ip)}/32"


def _uncovered(cidrs, covering) -> list[str]:
    """``cidrs`` (deduplicated, in order) that no range of ``covering`` contains already."""
    nets = [ipaddress.ip_network(c, strict=False) for c in covering]
    out = []
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        if net.version == 4 and not any(net.subnet_of(n) for n in nets) and str(net) not in out:
            out.append(str(net))
    return out


def firewall_rules(cfg: StackhubConfig, ep: Endpoints) -> list[Rule]:
    """The rules, in order per chain, for the users network's bridge ``ep.bridge``.

    DOCKER-USER sees forwarded traffic before Docker's own rules. ACCEPT there is final; RETURN
    hands the packet on to Docker's rules (which still keep other Docker networks apart).
    """
    policy = cfg.spawner.network
    i = ("-i", ep.bridge)
    same = i + ("-o", ep.bridge)
    est = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
    fwd = "DOCKER-USER"
    rules = [Rule("ipv4", fwd, i + est + ("-j", "RETURN"), "replies go on to the Docker rules")]
    for who, ip in (("hub", ep.hub), ("proxy", ep.proxy)):
        rules.append(Rule("ipv4", fwd, same + ("-s", _host(ip), "-j", "ACCEPT"), f"the {who} reaches user servers"))
    for who, ip in (("hub", ep.hub), ("proxy", ep.proxy)):
        rules.append(Rule("ipv4", fwd, i + ("-s", _host(ip), "-j", "RETURN"), f"other traffic of the {who} goes on to the Docker rules"))
    rules += [
        Rule("ipv4", fwd, same + ("-d", _host(ep.hub), "-p", "tcp", "--dport", str(HUB_PORT), "-j", "ACCEPT"),
             "users reach the hub API"),
        Rule("ipv4", fwd, same + ("-j", "DROP"), "users reach no other server, the proxy or hub services"),
    ]
    dns = [str(ipaddress.ip_address(d)) for d in ep.dns if ipaddress.ip_address(d).version == 4]
    for ns in dns:
        for proto in ("udp", "tcp"):
            rules.append(Rule("ipv4", fwd, i + ("-d", _host(ns), "-p", proto, "--dport", "53", "-j", "RETURN"),
                              "DNS through the resolver of the engine"))
    for cidr in policy.allow_private_cidrs:
        rules.append(Rule("ipv4", fwd, i + ("-d", cidr, "-j", "RETURN"), "allowPrivateCidrs"))
    for cidr, why in BLOCKED_IPV4:
        rules.append(Rule("ipv4", fwd, i + ("-d", cidr, "-j", "DROP"), why))
    for cidr in _uncovered(ep.host_networks, [c for c, _ in BLOCKED_IPV4]):
        rules.append(Rule("ipv4", fwd, i + ("-d", cidr, "-j", "DROP"), "the LAN of the host"))
    if not policy.internet:
        rules.append(Rule("ipv4", fwd, i + ("-j", "DROP"), "internet is off"))

    # the host itself (its addresses on every interface, the bridge's gateway included): INPUT.
    # Only the hub (which holds the Docker socket anyway) opens connections to it; replies pass.
    for ns in dns:
        for proto in ("udp", "tcp"):
            rules.append(Rule("ipv4", "INPUT", i + ("-d", _host(ns), "-p", proto, "--dport", "53", "-j", "ACCEPT"),
                              "DNS when the resolver runs on the host"))
    for cidr in policy.allow_private_cidrs:
        rules.append(Rule("ipv4", "INPUT", i + ("-d", cidr, "-j", "ACCEPT"), "allowPrivateCidrs"))
    rules.append(Rule("ipv4", "INPUT", i + ("!", "-s", _host(ep.hub), "-m", "conntrack", "!", "--ctstate",
                                           "RELATED,ESTABLISHED", "-j", "DROP"),
                      "users reach nothing on the host"))

    # the users network is IPv4 only: no IPv6 at all (link-local fe80::/10 to other containers or
    # the host, fc00::/7) leaves its bridge
    rules.append(Rule("ipv6", "FORWARD", i + ("-j", "DROP"), "no IPv6 on the users network"))
    rules.append(Rule("ipv6", "INPUT", i + ("-j", "DROP"), "no IPv6 from the users network to the host"))
    return rules


CHAINS = {"ipv4": ("DOCKER-USER", "INPUT"), "ipv6": ("FORWARD", "INPUT")}


def tagged_lines(listing: str, tag: str) -> list[str]:
    """The ``-A`` lines of ``iptables -S`` output whose comment is ``tag`` or starts with ``tag ``."""
    out = []
    for line in listing.splitlines():
        if not line.startswith("-A "):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        for k, token in enumerate(tokens[:-1]):
            if token == "--comment" and (tokens[k + 1] == tag or tokens[k + 1].startswith(tag + " ")):
                out.append(line)
                break
    return out


def _quote(arg: str) -> str:
    if any(c in arg for c in ' "\'\\'):
        raise ValueError(f"unexpected character in iptables argument {arg!r}")
    return arg


def restore_script(rules: list[Rule], existing: list[str], tag: str) -> str:
    """``iptables-restore --noflush`` input: delete ``existing`` (``-A`` lines of this tag), then
    insert ``rules`` at the top of their chains, in order, in one transaction."""
    lines = ["*filter"]
    lines += ["-D" + line[2:] for line in existing]
    position: dict[str, int] = {}
    for rule in rules:
        position[rule.chain] = position.get(rule.chain, 0) + 1
        j = rule.args.index("-j")
        match, target = " ".join(_quote(a) for a in rule.args[:j]), " ".join(_quote(a) for a in rule.args[j:])
        comment = f'-m comment --comment "{rule.comment(tag)}"'
        lines.append(f"-I {rule.chain} {position[rule.chain]} {match} {comment} {target}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def nameservers(resolv_conf: str) -> list[str]:
    """IPv4 ``nameserver`` addresses of a resolv.conf, loopback ones left out (Docker skips them)."""
    out = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if ip.version == 4 and not ip.is_loopback:
                out.append(str(ip))
    return out
