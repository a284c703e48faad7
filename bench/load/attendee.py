"""One simulated attendee: the walk a browser takes through the hub, timed phase by phase.

HTTP with ``requests`` (its cookie jar follows the hub's and the user server's cookie paths and
the OAuth redirects as a browser's does); the kernel through the proxy's websocket with tornado's
websocket client, speaking Jupyter's JSON messages on the ``channels`` endpoint. Nothing is mocked:
a failure anywhere is recorded with the phase and the reason, never retried into a success.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote, urlsplit

import requests
from requests.cookies import get_cookie_header

from bench.load.stats import AttendeeRecord


@dataclass(frozen=True)
class Endpoint:
    """What an attendee needs to know about a deployment: where, how to log in, what the form posts."""

    name: str                 # "stackhub" / "stock"
    url: str                  # public base URL, ending in "/"
    ca: str                   # CA file to trust
    tag_field: str            # the spawn form's field for the stack tag
    login_extra: dict = field(default_factory=dict)   # e.g. the room code in the ``otp`` field
    form_extra: dict = field(default_factory=dict)    # other spawn form fields (size)
    # where a user's server answers, "https://<host>:<port>/" (its own host in subdomain mode);
    # None: under ``url``, as stock JupyterHub serves them
    server_origin: Callable[[str], str] | None = None

    def server_url(self, user: str, path: str) -> str:
        base = self.server_origin(user) if self.server_origin else self.url
        return base + f"user/{quote(user)}/{path.lstrip('/')}"


class Failure(Exception):
    pass


class Progress:
    """Counts of attendees per reached phase, for the progress line (updated from many threads)."""

    def __init__(self):
        self.counts = {}
        self.failed = 0

    def reached(self, phase: str):
        self.counts[phase] = self.counts.get(phase, 0) + 1  # a lost increment only blurs a progress line


def page_message(page: str) -> str:
    """The message of a hub page that refused something: its alert / error element when it has
    one (the spawn form shows the error above the form), else the page's text without scripts."""
    page = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", page or "")
    found = re.findall(r'(?is)<(div|p|span)\b[^>]*class="[^"]*(?:alert|error)[^"]*"[^>]*>(.*?)</\1>', page)
    text = " ".join(inner for _, inner in found) or page
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))).strip()


def _check(r: requests.Response, phase: str, ok=(200,)):
    if r.status_code not in ok:
        raise Failure(f"{phase}: HTTP {r.status_code} on {urlsplit(r.url).path}: {page_message(r.text)[:300]}")
    return r


class Attendee:
    def __init__(self, ep: Endpoint, user: str, password: str, *, tag: str, code: str, expect: str, arrival: float,
                 t0: float, timeout: float, progress: Progress | None = None, ready_callback=None,
                 keep_kernel: bool = True, prewarmed: bool = False, kernel: bool = True):
        self.ep, self.user, self.password = ep, user, password
        self.tag, self.code, self.expect, self.keep_kernel = tag, code, expect, keep_kernel
        self.prewarmed, self.kernel = prewarmed, kernel
        self.t0, self.timeout = t0, timeout
        self.rec = AttendeeRecord(user=user, arrival=arrival)
        self.progress = progress or Progress()
        self.ready_callback = ready_callback
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.verify = ep.ca
        self.kernel_id = None

    # -- helpers ----------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.ep.url + path.lstrip("/")

    def _server(self, path: str) -> str:
        return self.ep.server_url(self.user, path)

    def _xsrf(self, path_prefix: str) -> str | None:
        """The ``_xsrf`` cookie of the hub (``/hub``) or of the user's server (``/user/``): the one set
        by that part's host (its own in subdomain mode, where cookies sit on ``/``), then by path."""
        url = self._server("") if path_prefix.startswith("/user") else self.ep.url
        host = urlsplit(url).hostname
        mine = [c for c in self.s.cookies if c.name == "_xsrf" and c.domain.lstrip(".") in (host, f"{host}.local")]
        for c in mine:
            if c.path.startswith(path_prefix) or c.path == "/":
                return c.value
        return None

    def _left(self) -> float:
        return max(1.0, self.timeout - (time.monotonic() - self.t0 - self.rec.arrival))

    def _phase(self, name, fn, *args):
        start = time.monotonic()
        try:
            out = fn(*args)
        except Failure as e:
            self.rec.fail(name, str(e))
            raise
        except requests.RequestException as e:
            self.rec.fail(name, f"{name}: {type(e).__name__}: {e}")
            raise Failure(str(e)) from e
        except Exception as e:  # noqa: BLE001 - anything unexpected is a failure of this attendee, with its reason
            self.rec.fail(name, f"{name}: {type(e).__name__}: {e}")
            raise Failure(str(e)) from e
        self.rec.durations[name] = round(time.monotonic() - start, 4)
        self.progress.reached(name)
        return out

    # -- the walk ---------------------------------------------------------------------------------

    def run(self) -> AttendeeRecord:
        """Arrive, log in, spawn, open the lab, run the cell. ``stop()`` comes later (after idle).

        A pre-warmed attendee's server already runs: after the login the hub sends them on to it
        (as a browser follows the redirects), so there is no form and no spawn."""
        try:
            self._phase("login", self.login)
            if self.prewarmed:
                self._phase("lab", self.follow_to_lab)
            else:
                self._phase("form", self.form)
                self._phase("spawn", self.spawn)
                self._phase("lab", self.lab)
            self.rec.ready_at = round(time.monotonic() - self.t0, 4)
            self.progress.reached("ready")
            if self.ready_callback:
                self.ready_callback(self.user)
            if not self.kernel:
                return self.rec
            self._phase("kernel_start", self.start_kernel)
            self._phase("cell", self.run_cell)
            self.rec.done_at = round(time.monotonic() - self.t0, 4)
            if not self.keep_kernel:
                self._phase("kernel_shutdown", self.shutdown_kernel)
        except Failure:
            self.progress.failed += 1
        return self.rec

    def login(self):
        r = _check(self.s.get(self._url("hub/login"), timeout=self._left()), "login page")
        # password2: the claim form asks the password twice (ignored once the name is claimed)
        data = {"username": self.user, "password": self.password, "password2": self.password,
                "_xsrf": self._xsrf("/hub") or "", **self.ep.login_extra}
        r = self.s.post(self._url("hub/login"), data=data, allow_redirects=False, timeout=self._left())
        if r.status_code != 302 or "/hub/login" in r.headers.get("Location", ""):
            _check(r, "login", ok=())
        del r

    def form(self):
        r = _check(self.s.get(self._url(f"hub/spawn/{quote(self.user)}"), timeout=self._left()), "spawn form")
        if self.ep.tag_field not in r.text:
            raise Failure(f"spawn form: no field {self.ep.tag_field!r} on {urlsplit(r.url).path}")

    def spawn(self):
        data = {self.ep.tag_field: self.tag, **self.ep.form_extra, "_xsrf": self._xsrf("/hub") or ""}
        r = self.s.post(self._url(f"hub/spawn/{quote(self.user)}"), data=data, allow_redirects=False,
                        timeout=self._left())
        if r.status_code != 302:
            _check(r, "spawn form POST", ok=())
        # what the spawn-pending page's EventSource reads
        url = self._url(f"hub/api/users/{quote(self.user)}/server/progress")
        with self.s.get(url, stream=True, timeout=self._left(),
                        headers={"X-XSRFToken": self._xsrf("/hub") or "", "Accept": "text/event-stream"}) as r:
            _check(r, "progress")
            last = None
            for line in r.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                last = event
                if event.get("failed"):
                    raise Failure(f"spawn failed: {event.get('message', '')}")
                if event.get("ready"):
                    return
        raise Failure(f"progress stream ended without ready (last event: {last})")

    def lab(self):
        r = _check(self.s.get(self._server("lab"), timeout=self._left()), "lab")
        self._lab_answers(r, "lab")

    def _lab_answers(self, r: requests.Response, phase: str):
        """``r`` is JupyterLab's page, and the server's ``api/status`` answers (ready means both)."""
        if "jupyter-config-data" not in r.text:
            raise Failure(f"{phase}: {urlsplit(r.url).path} is not JupyterLab's page")
        r = self.s.get(self._server("api/status"), timeout=self._left(),
                       headers={"X-XSRFToken": self._xsrf("/user/") or ""})
        _check(r, "api/status")

    def follow_to_lab(self):
        """What the browser does after the login's redirect: the hub's root sends a user whose server
        runs to it, the server's OAuth handshake with the hub, then JupyterLab's page."""
        r = _check(self.s.get(self._url("hub/"), timeout=self._left()), "hub → lab")
        if not urlsplit(r.url).path.startswith(f"/user/{quote(self.user)}/"):
            raise Failure(f"hub → lab: the hub sent a pre-warmed user to {urlsplit(r.url).path}, not their server")
        self._lab_answers(r, "hub → lab")

    def start_kernel(self):
        headers = {"X-XSRFToken": self._xsrf("/user/") or ""}
        r = self.s.post(self._server("api/kernels"), json={}, headers=headers,
                        timeout=self._left())
        _check(r, "kernel start", ok=(201,))
        self.kernel_id = r.json()["id"]
        self._ws(self._kernel_info)

    def shutdown_kernel(self):
        r = self.s.delete(self._server(f"api/kernels/{self.kernel_id}"), timeout=self._left(),
                          headers={"X-XSRFToken": self._xsrf("/user/") or ""})
        _check(r, "kernel shutdown", ok=(204,))

    def run_cell(self):
        self._ws(self._execute)

    def stop(self):
        """Stop the server as the hub's home page does (the user's own API call), wait until gone."""
        start = time.monotonic()
        headers = {"X-XSRFToken": self._xsrf("/hub") or ""}
        r = self.s.delete(self._url(f"hub/api/users/{quote(self.user)}/server"), headers=headers, timeout=120)
        if r.status_code not in (202, 204):
            self.rec.fail("stop", f"stop: HTTP {r.status_code}: {r.text[:200]}")
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = self.s.get(self._url(f"hub/api/users/{quote(self.user)}"), headers=headers, timeout=60)
            if r.status_code == 200 and not r.json().get("servers") and not r.json().get("pending"):
                self.rec.durations["stop"] = round(time.monotonic() - start, 4)
                return
            time.sleep(0.25)
        self.rec.fail("stop", "stop: the server was still there after 120 s")

    # -- the kernel's websocket (tornado) ---------------------------------------------------------

    def _ws(self, talk):
        asyncio.run(asyncio.wait_for(self._ws_session(talk), self._left()))

    async def _ws_session(self, talk):
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = self._server(f"api/kernels/{self.kernel_id}/channels")
        prepared = requests.Request("GET", url).prepare()
        headers = {"X-XSRFToken": self._xsrf("/user/") or ""}
        cookie = get_cookie_header(self.s.cookies, prepared)
        if cookie:
            headers["Cookie"] = cookie
        ws_url = "wss" + url[len("https"):] if url.startswith("https") else "ws" + url[len("http"):]
        req = HTTPRequest(ws_url, headers=headers, ca_certs=self.ep.ca, request_timeout=self._left(),
                          connect_timeout=self._left())
        conn = await websocket_connect(req)
        try:
            await talk(conn)
        finally:
            conn.close()

    def _message(self, msg_type: str, content: dict) -> dict:
        return {
            "header": {"msg_id": uuid.uuid4().hex, "username": self.user, "session": uuid.uuid4().hex,
                       "msg_type": msg_type, "version": "5.3",
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
        }

    async def _replies(self, conn, msg_id):
        while True:
            raw = await conn.read_message()
            if raw is None:
                raise Failure(f"the kernel's websocket closed ({conn.close_code} {conn.close_reason})")
            if isinstance(raw, bytes):
                continue  # binary frames carry buffers; this cell sends none
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                yield msg

    async def _kernel_info(self, conn):
        # the kernel answers kernel_info once it has started (the stack set up, ipykernel loaded)
        msg = self._message("kernel_info_request", {})
        conn.write_message(json.dumps(msg))
        async for reply in self._replies(conn, msg["header"]["msg_id"]):
            if reply["header"]["msg_type"] == "kernel_info_reply":
                return

    async def _execute(self, conn):
        msg = self._message("execute_request", {"code": self.code, "silent": False, "store_history": False,
                                                "user_expressions": {}, "allow_stdin": False,
                                                "stop_on_error": True})
        conn.write_message(json.dumps(msg))
        out, error = "", None
        async for reply in self._replies(conn, msg["header"]["msg_id"]):
            kind, content = reply["header"]["msg_type"], reply["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out += content.get("text", "")
            elif kind == "error":
                error = f"{content.get('ename')}: {content.get('evalue')}"
            elif kind == "execute_reply":
                if content.get("status") != "ok":
                    raise Failure(f"cell: {error or content.get('status')}")
                if self.expect not in out:
                    raise Failure(f"cell: output {out!r} lacks {self.expect!r}")
                return
