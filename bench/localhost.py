"""Resolve ``*.localhost`` to loopback in this process, as browsers do (RFC 6761).

In subdomain mode each user server answers at ``https://<user>.users.localhost:<port>/``. Chromium
resolves every ``*.localhost`` name by itself; glibc here does not (``Name or service not known``), so
the load bench and the tests, which talk HTTP from Python, install this before they connect. The
name still travels in TLS (SNI, certificate check) and in the Host header: only the address lookup
changes, and only for names under ``localhost``.
"""

from __future__ import annotations

import socket

_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.lower().rstrip(".").endswith(".localhost"):
        host = "localhost"
    return _system_getaddrinfo(host, *args, **kwargs)


def install():
    """Idempotent: every later lookup of a ``*.localhost`` name gets ``localhost``'s addresses."""
    socket.getaddrinfo = _getaddrinfo
