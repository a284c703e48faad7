"""Limits of the hub process itself that are not JupyterHub traits.

``limit_request_bodies``: Tornado reads a request body of up to 100 MB by default before any
handler (and so any login check) runs. The hub's own pages and API take small bodies; uploads go to
the course service, its own process with its own limit. JupyterHub makes its ``HTTPServer``
without a body limit, so the limit is set as that class's default, from ``jupyterhub_config.py``
(which runs in the hub process only): a larger body is refused with HTTP 400 before it is read.
"""

from __future__ import annotations

from tornado.httpserver import HTTPServer

from spawner.core.config import memory_bytes


def limit_request_bodies(limit: str) -> int:
    """Every HTTPServer made from now on in this process reads at most ``limit`` (e.g. ``1M``)."""
    nbytes = memory_bytes(limit)
    # the buffer holds headers and the body; a little room above the body limit for the headers
    HTTPServer.configure(None, max_body_size=nbytes, max_buffer_size=nbytes + 64 * 1024)
    return nbytes
