"""A small async client of JupyterHub's REST API, used by the ``stackhub-sessions`` and
``stackhub-diskwatch`` services.

Only what the service needs: users (paginated), groups, start and stop a user's default server and
wait for it. Errors carry the hub's status and message, so the service can pass them on verbatim
(a refused ``image_tag`` comes back as the spawner's HTTP 400 text).
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

PAGINATION = "application/jupyterhub-pagination+json"


class HubError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class HubAPI:
    """``api_url`` like http://stackhub-hub:8081/hub/api; ``token`` the service's own token."""

    def __init__(self, *, api_url: str, token: str, client: AsyncHTTPClient | None = None,
                 poll: float = 1.0):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.client = client or AsyncHTTPClient(force_instance=True, max_clients=64)
        self.poll = poll

    async def request(self, method: str, path: str, body=None, headers: dict | None = None):
        req = HTTPRequest(
            self.api_url + path, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json", **(headers or {})},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            allow_nonstandard_methods=True, request_timeout=60,
        )
        try:
            resp = await self.client.fetch(req)
        except HTTPClientError as e:
            message = e.message or ""
            if e.response is not None and e.response.body:
                try:
                    message = json.loads(e.response.body).get("message", message)
                except ValueError:
                    message = e.response.body.decode(errors="replace")[:500]
            raise HubError(e.code, message) from None
        if resp.code == 204 or not resp.body:
            return resp.code, None
        return resp.code, json.loads(resp.body)

    # -- reading ---------------------------------------------------------------------------

    async def _get_or_none(self, path: str) -> dict | None:
        try:
            return (await self.request("GET", path))[1]
        except HubError as e:
            if e.status == 404:
                return None
            raise

    async def user(self, name: str) -> dict | None:
        return await self._get_or_none(f"/users/{quote(name, safe='')}")

    async def users(self, state: str | None = None) -> list[dict]:
        """All users; ``state="active"``: only those with a running or pending server."""
        out, offset = [], 0
        query = f"state={state}&" if state else ""
        while True:
            _, page = await self.request("GET", f"/users?{query}offset={offset}&limit=200",
                                         headers={"Accept": PAGINATION})
            items = page["items"] if isinstance(page, dict) else page
            out += items
            nxt = page.get("_pagination", {}).get("next") if isinstance(page, dict) else None
            if not nxt or not items:
                return out
            offset = nxt["offset"]

    async def group(self, name: str) -> dict | None:
        return await self._get_or_none(f"/groups/{quote(name, safe='')}")

    async def groups(self) -> list[dict]:
        _, page = await self.request("GET", "/groups?limit=200", headers={"Accept": PAGINATION})
        return page["items"] if isinstance(page, dict) else page

    # -- starting and stopping ---------------------------------------------------------------

    async def start(self, name: str, options: dict) -> int:
        """POST the server with ``options`` as user_options: 201 ready, 202 pending."""
        code, _ = await self.request("POST", f"/users/{quote(name, safe='')}/server", options)
        return code

    async def stop(self, name: str) -> int:
        code, _ = await self.request("DELETE", f"/users/{quote(name, safe='')}/server")
        return code

    async def stop_server(self, name: str, server: str = "") -> int:
        """Stop the default server (``server=""``) or a named one (kept, not deleted)."""
        if not server:
            return await self.stop(name)
        code, _ = await self.request("DELETE", f"/users/{quote(name, safe='')}/servers/{quote(server, safe='')}",
                                     {"remove": False})
        return code

    async def wait(self, name: str, *, ready: bool, timeout: float) -> dict:
        """Poll until the default server is ready (``ready=True``) or gone; return the server model.

        Raises HubError(0, ...) when a start ends without a server (the spawn failed) or on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            model = await self.user(name) or {}
            server = (model.get("servers") or {}).get("")
            if ready and server and server.get("ready"):
                return server
            if not ready and not server:
                return {}
            if ready and not server and not model.get("pending"):
                raise HubError(0, "the server stopped before it was ready (the spawn failed; see the hub log)")
            if time.monotonic() > deadline:
                raise HubError(0, f"not {'ready' if ready else 'stopped'} after {timeout:.0f}s")
            await asyncio.sleep(self.poll)
