"""What every ``stackhub`` command shares: the deployment's paths and config file on this host, one
client of the hub's and its services' REST APIs (``ApiError``), the table printer and the guard that
turns an API error into one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from spawner.core.config import CONFIG_ENV
from spawner.core.names import SESSIONS_SERVICE

REPO = Path(__file__).resolve().parents[2]


def host_paths():
    from spawner.deploy.single_host import HostPaths

    return HostPaths(Path(os.environ.get("STACKHUB_STATE", REPO / "var")).resolve())


def config_file() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


class ApiError(Exception):
    pass


class Client:
    """JSON calls to one hub-managed service's REST API (``service=None``: the hub's own API);
    ``data`` sends raw bytes (uploads) instead."""

    def __init__(self, base: str, token: str, cafile: str | None, service: str | None = SESSIONS_SERVICE):
        self.base = base.rstrip("/") + (f"/services/{service}/api/" if service else "/hub/api/")
        self.token = token
        self.ssl = ssl.create_default_context(cafile=cafile)

    def __call__(self, method: str, path: str, body=None, *, data: bytes | None = None,
                 content_type: str = "application/json", timeout: float = 60):
        req = urllib.request.Request(
            self.base + path, method=method, data=data if data is not None else None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message") or e.reason
            except ValueError:
                message = e.reason
            raise ApiError(f"{method} {path}: {e.code} {message}") from None
        except urllib.error.URLError as e:
            raise ApiError(f"cannot reach {self.base}: {e.reason} (is the hub up? `make up`)") from None


def client(service: str | None = SESSIONS_SERVICE, token: str | None = None) -> Client:
    """A client of ``service`` with ``token`` (default: the admin token of this deployment)."""
    from spawner.core.config import load_config

    cfg = load_config()
    paths = host_paths()
    if not token:
        token_file = paths.secrets / "admin-token"
        if not token_file.exists():
            raise ApiError(f"no admin token at {token_file}; run `make up` first (or give a token)")
        token = token_file.read_text().strip()
    port = cfg.hub.port_suffix
    base = os.environ.get("STACKHUB_URL") or f"https://{cfg.hub.public_host}{port}/"
    ca = paths.tls / "ca.pem"
    return Client(base, token, str(ca) if ca.exists() and not cfg.tls.cert_file else None, service)


def table(rows: list[list[str]], header: list[str]):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ApiError as e:
            print(f"stackhub: {e}", file=sys.stderr)
            return 2
    return run
