"""Which git URLs a course may come from: pure checks (scheme, host, addresses, credentials).

A course's git URL is cloned by the course service on the hub's side, so it must not become a
way into the deployment's own network: only the schemes in ``courses.gitSchemes`` (https by
default), and every address the host resolves to must be public (not private, loopback,
link-local, multicast or reserved) unless ``courses.gitAllowedHosts`` names the host or a network
holding the address. The clone is then pinned to the addresses checked here (``curl_resolve``),
so a second DNS answer cannot point it elsewhere.

Credentials in a URL (``https://user:TOKEN@host/...``) may be used for the clone, but never stored
or logged: ``strip_credentials`` and ``scrub`` remove them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

SCP_LIKE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>(?!//|:)[^\s]+)$")  # not ext::cmd
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class SourceRefused(ValueError):
    """A git URL the policy refuses; the message names the rule and how to open it."""


@dataclass(frozen=True)
class GitPolicy:
    schemes: tuple[str, ...] = ("https",)
    allowed_hosts: tuple[str, ...] = ()  # host names, or networks in CIDR notation


@dataclass(frozen=True)
class GitTarget:
    url: str                # as given (may hold credentials: for the clone only)
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def display(self) -> str:
        return strip_credentials(self.url)

    @property
    def curl_resolve(self) -> list[str]:
        """``host:port:addr`` entries for git's ``http.curloptResolve`` (http and https only)."""
        if self.scheme not in ("http", "https") or not self.addresses:
            return []
        addrs = ",".join(f"[{a}]" if ":" in a else a for a in self.addresses)
        return [f"{self.host}:{self.port}:{addrs}"]


def strip_credentials(url: str) -> str:
    """``https://user:TOKEN@host/x`` -> ``https://host/x``; other strings are returned as they are."""
    if SCP_LIKE.match(url or ""):
        return url  # user@host:path names an ssh user, not a secret
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def scrub(text: str) -> str:
    """Remove the user-info part of every URL in ``text`` (error messages, log lines)."""
    return _USERINFO.sub(r"\g<scheme>", text)


def parse_git_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a git URL; ``user@host:path`` is ssh. Raises SourceRefused."""
    m = SCP_LIKE.match(url or "")
    if m and "://" not in url:
        return "ssh", m.group("host").lower(), DEFAULT_PORTS["ssh"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SourceRefused(f"git source {strip_credentials(url)!r} is not a valid URL") from None
    scheme = (parts.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or any(c.isspace() for c in url):
        raise SourceRefused(f"git source {strip_credentials(url)!r} must be an https:// URL")
    return scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme]


def address_problem(address: str | Address) -> str | None:
    """Why ``address`` is not a public one (``"loopback"``, ``"link-local"``, ...), or None."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind, bad in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                      ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                      ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if bad:
            return kind
    if not ip.is_global:
        return "non-public"
    return None


def _networks(entries: Iterable[str]) -> list:
    out = []
    for e in entries:
        try:
            out.append(ipaddress.ip_network(e, strict=False))
        except ValueError:
            pass  # a host name
    return out


def host_allowed(host: str, policy: GitPolicy) -> bool:
    return host.lower() in {e.lower().rstrip(".") for e in policy.allowed_hosts}


def address_allowed(address: str, policy: GitPolicy) -> bool:
    """Public, or inside one of the allow-listed networks."""
    if address_problem(address) is None:
        return True
    ip = ipaddress.ip_address(address)
    return any(ip.version == n.version and ip in n for n in _networks(policy.allowed_hosts))


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the I/O of ``check_git_url``; tests pass their own)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0].split("%")[0] for info in infos})


def check_git_url(url: str, policy: GitPolicy,
                  resolver: Callable[[str, int], list[str]] = resolve) -> GitTarget:
    """The URL, its host and the checked addresses it may be cloned from; SourceRefused otherwise."""
    if not url or url.startswith("-"):
        raise SourceRefused("a git source needs a URL, such as https://github.com/org/tutorial.git")
    scheme, host, port = parse_git_url(url)
    shown = strip_credentials(url)
    if scheme not in policy.schemes:
        allowed = ", ".join(f"{s}://" for s in policy.schemes) or "none"
        raise SourceRefused(f"git source {shown!r}: scheme {scheme} is not allowed (allowed: {allowed}); "
                            "an operator opens others with courses.gitSchemes")
    if host_allowed(host, policy):
        return GitTarget(url, scheme, host, port, ())
    try:
        addresses = [str(ipaddress.ip_address(host))]  # an address literal needs no lookup
    except ValueError:
        addresses = None
    try:
        addresses = addresses or resolver(host, port)
    except (OSError, UnicodeError):
        raise SourceRefused(f"cannot fetch the git repository {shown}: host {host} does not resolve") from None
    if not addresses:
        raise SourceRefused(f"cannot fetch the git repository {shown}: host {host} has no address")
    for address in addresses:
        if not address_allowed(address, policy):
            where = f"{address} is" if host == address else f"host {host} resolves to {address},"
            raise SourceRefused(
                f"git source {shown!r}: {where} a {address_problem(address)} address; "
                "courses come from public hosts only (an operator allows a host or network with "
                "courses.gitAllowedHosts)")
    return GitTarget(url, scheme, host, port, tuple(addresses))
