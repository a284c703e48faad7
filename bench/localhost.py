"""Resolve ``*.localhost`` to loopback in this process, as browsers do (RFC 6761).

In subdomain mode each user server answers at ``https://<user>.users.localhost:<port>/``. Chromium
resolves every ``*.localhost`` name by itself; glibc here does not (``Name or service not known``), so
the load bench and the tests, which talk HTTP from Python, install this before they connect. The
name still travels in TLS (SNI, certificate check) and in the Host header: only the address lookup
changes, and only for names under ``localhost``.

Python's cookie jar has a second gap: it files a host without a dot as ``localhost.local``, so a
cookie JupyterHub sets for ``Domain=localhost`` (its session id, shared with the user servers'
subdomains) is never sent back, and every XSRF check of the hub then fails. Browsers send it.
``install`` makes the jar do the same, for ``localhost`` alone.
"""

from __future__ import annotations

import http.cookiejar
import socket

_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.lower().rstrip(".").endswith(".localhost"):
        host = "localhost"
    return _system_getaddrinfo(host, *args, **kwargs)


def _under_localhost(host: str) -> bool:
    host = host.lower().split(":")[0].rstrip(".")
    return host in ("localhost", "localhost.local") or host.endswith(".localhost")


def _localhost_domain(check):
    def wrapped(self, cookie_or_domain, request, *args):
        domain = cookie_or_domain if isinstance(cookie_or_domain, str) else cookie_or_domain.domain
        if domain.lstrip(".") == "localhost" and _under_localhost(request.host):
            return True
        return check(self, cookie_or_domain, request, *args)
    wrapped.stackhub_localhost = True
    return wrapped


def install():
    """Idempotent: every later lookup of a ``*.localhost`` name gets ``localhost``'s addresses, and
    a ``Domain=localhost`` cookie goes back to ``localhost`` and its subdomains."""
    socket.getaddrinfo = _getaddrinfo
    policy = http.cookiejar.DefaultCookiePolicy
    for name in ("domain_return_ok", "return_ok_domain"):
        if not getattr(getattr(policy, name), "stackhub_localhost", False):
            setattr(policy, name, _localhost_domain(getattr(policy, name)))
