"""A real stackhub deployment for tests: the hub image, the proxy, the real Docker engine.

Starts what ``make up`` starts, with a test config (its own hub state volume and data volume) and a
state directory of its own, and removes the test users' containers and volumes afterwards. On a
failure the hub's and proxy's logs are written to test-artifacts/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests
import yaml

from spawner.core import names
from spawner.core.config import load_config
from spawner.deploy.single_host import Deployment, HostPaths
from spawner.deploy.tls import TLSFiles

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Hub:
    url: str
    http_url: str
    ca: str
    token: str
    password: str
    admin_password: str
    deployment: Deployment
    config_file: Path
    tls: TLSFiles
    client: docker.DockerClient
    passwords: dict = field(default_factory=dict)  # tutorial passwords the tests gave their users

    def api(self, method, path, **kw):
        kw.setdefault("timeout", 30)
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}hub/api{path}", headers=headers, verify=self.ca, **kw)

    def origin(self, name: str) -> str:
        """``https://<host>:<port>/`` where ``name``'s servers answer (their own host in subdomain mode)."""
        from spawner.hub.origins import server_origin

        return server_origin(self.deployment.cfg.hub, name)

    def create_user(self, name):
        r = self.api("POST", f"/users/{requests.utils.quote(name, safe='')}")
        assert r.status_code in (201, 409), r.text
        if r.status_code == 201 and name != "admin":
            # its password now, before any server: an admin's reset later would stop its servers
            self.user_password(name)
        return name

    def spawn(self, name, options=None, server="", timeout=180):
        """Start a server through the REST API and wait until it is ready; return the user model."""
        q = requests.utils.quote(name, safe="")
        path = f"/users/{q}/servers/{server}" if server else f"/users/{q}/server"
        r = self.api("POST", path, json=options or {})
        assert r.status_code in (201, 202), f"{r.status_code} {r.text}"
        return self.wait_ready(name, server, timeout)

    def wait_ready(self, name, server="", timeout=180):
        q = requests.utils.quote(name, safe="")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{q}").json()
            srv = model.get("servers", {}).get(server)
            if srv and srv.get("ready"):
                return model
            if srv is None and model.get("pending") is None and time.monotonic() > deadline - timeout + 5:
                raise AssertionError(f"server {name}/{server} is gone: {model}")
            time.sleep(0.5)
        raise AssertionError(f"server {name}/{server} not ready in {timeout}s")

    def stop(self, name, server=""):
        q = requests.utils.quote(name, safe="")
        path = f"/users/{q}/servers/{server}" if server else f"/users/{q}/server"
        r = self.api("DELETE", path, json={"remove": False} if server else None)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{q}").json()
            if server not in model.get("servers", {}):
                return
            time.sleep(0.5)
        raise AssertionError(f"server {name}/{server} did not stop")

    def user_password(self, name: str) -> str:
        """A tutorial password of ``name``'s own, set through the admins' reset API (once per test session)."""
        if name not in self.passwords:
            r = self.api("POST", f"/stackhub/users/{requests.utils.quote(name, safe='')}/password")
            assert r.status_code == 200, r.text
            self.passwords[name] = r.json()["password"]
        return self.passwords[name]

    def session(self, username, password=None, room_code=""):
        """A logged-in browser-like session through the tutorial login form.

        Without ``password``: the admin secret for ``admin``, else a password of the user's own.
        """
        if password is None:
            password = self.admin_password if username == "admin" else self.user_password(username)
        s = requests.Session()
        s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides s.verify
        s.verify = self.ca
        s.get(f"{self.url}hub/login")
        xsrf = s.cookies.get("_xsrf")
        r = s.post(f"{self.url}hub/login", data={"username": username, "password": password, "otp": room_code,
                                                  "password2": password, "_xsrf": xsrf}, allow_redirects=True)
        assert r.status_code == 200, r.status_code
        assert "/hub/login" not in r.url, f"login as {username} refused: {r.url}"
        return s

    def reconfigure(self, extra: dict | None = None, environment: dict | None = None):
        """Restart hub and proxy with TEST_CONFIG plus ``extra`` (same state, secrets and CA).

        ``environment``: extra variables for the hub container (e.g. an OAuth client secret).
        Running servers keep running. Call with no argument to go back to the test default.
        """
        config = with_test_defaults(extra)
        self.config_file.write_text(yaml.safe_dump(config))
        self.deployment.cfg = load_config(self.config_file)
        self.deployment.up(environment=environment)

    def dump_logs(self, name="hub"):
        ARTIFACTS.mkdir(exist_ok=True)
        for c in (OWN.hub, OWN.proxy):
            try:
                logs = self.client.containers.get(c).logs(tail=400)
            except docker.errors.NotFound:
                continue
            (ARTIFACTS / f"{name}-{c}.log").write_bytes(logs)


TEST_PREFIX = "stackhub-test"
OWN = names.Deployment(TEST_PREFIX)
# a deployment of its own beside a live `make up`: other prefix, ports, networks and volumes
TEST_CONFIG = {
    "hub": {"prefix": TEST_PREFIX, "httpsPort": 9443, "httpPort": 9080, "network": f"{TEST_PREFIX}-users",
            "apiNetwork": f"{TEST_PREFIX}-internal", "stateVolume": f"{TEST_PREFIX}-hub-state",
            "adminUsers": ["admin"], "orphanGraceSeconds": 20},  # test_faults waits out the grace
    "volumes": {"data": [{"source": f"{TEST_PREFIX}-data", "target": "/data"}],
                "homeVolume": f"{TEST_PREFIX}-home-{{user}}"},
    "stack": {"catalogTtl": 2},
    "courses": {"volume": "stackhub-test-courses"},
    # every request of the tests comes from one address (the engine's bridge), like a room behind one
    # NAT: the address limits fit a whole session; test_attendee_threats tries them with tight ones
    "auth": {"type": "shared-password", "loginThrottle": {"failuresPerAddress": 1000, "claimsPerAddressPerHour": 1000}},
}


LOCK = Path("/tmp/stackhub-deployment.lock")
_held = []


def hold_deployment_lock():
    """One test session at a time owns the deployment (fixed names and ports on one engine).

    Held until the process exits; a second session waits here instead of tearing the first down.
    """
    import fcntl

    if _held:  # this session holds it already
        return
    f = open(LOCK, "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    _held.append(f)


def start_hub(tmp: Path, extra: dict | None = None) -> Hub:
    hold_deployment_lock()
    client = docker.from_env()
    TEST_CONFIG["hub"]["image"] = checkout_hub_image(client)
    config = with_test_defaults(extra)
    config_file = tmp / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    cfg = load_config(config_file)
    paths = HostPaths(tmp / "var")
    dep = Deployment(client=client, cfg=cfg, paths=paths, config_file=config_file, log=lambda m: None)
    dep.down()  # whatever ran before (`make up`, an aborted session) lets go of the volumes
    # fresh hub state (and no courses) for the test session
    for vol in (cfg.hub.state_volume, cfg.courses.volume):
        try:
            client.volumes.get(vol).remove(force=True)
        except docker.errors.NotFound:
            pass
    seed_data(client, "stackhub-test-data")
    tls: TLSFiles = dep.up()
    secrets = paths.secrets
    return Hub(
        url=f"https://localhost:{cfg.hub.https_port}/",
        http_url=f"http://localhost:{cfg.hub.http_port}/",
        ca=str(tls.ca),
        token=(secrets / "admin-token").read_text().strip(),
        password=(secrets / "shared-password").read_text().strip(),
        admin_password=(secrets / "admin-password").read_text().strip(),
        deployment=dep,
        config_file=config_file,
        tls=tls,
        client=client,
    )


def checkout_hub_image(client) -> str:
    """The hub image built from this checkout (`make hub-image`), never another checkout's."""
    from spawner.build.images import hub_checkout_ref

    ref = hub_checkout_ref(client)
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise AssertionError(f"no hub image {ref} for this checkout's code: run `make hub-image`") from None
    return ref


def seed_data(client, volume):
    """Put a file in the tutorial data volume (as the operator would)."""
    client.volumes.create(volume)
    image = next(iter(client.images.list(name="stackhub/lsst-stack")), None)
    assert image is not None, "no stackhub/lsst-stack image: run `make images` first"
    client.containers.run(image.id, ["sh", "-c", "echo tutorial data > /data/README.txt"], user="0",
                          entrypoint=[], volumes={volume: {"bind": "/data", "mode": "rw"}}, remove=True)


def remove_user_objects(client, prefix_users):
    """The test users' servers and homes, of the test deployment only."""
    mine = {"label": [f"stackhub.deployment={TEST_PREFIX}"]}
    for c in client.containers.list(all=True, filters={"label": mine["label"] + ["stackhub.role=server"]}):
        if c.labels.get("stackhub.user") in prefix_users:
            c.remove(force=True)
    for v in client.volumes.list(filters={"label": mine["label"] + ["stackhub.role=home"]}):
        if (v.attrs.get("Labels") or {}).get("stackhub.user") in prefix_users:
            v.remove(force=True)


def with_test_defaults(extra: dict | None = None) -> dict:
    """TEST_CONFIG with ``extra`` merged one level deep: a section given in ``extra`` keeps the test
    deployment's own keys (prefix, ports, networks, volumes) unless it names them, or names another
    ``type`` (an OAuth ``auth`` replaces the tutorial login's)."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TEST_CONFIG.items()}
    for key, value in (extra or {}).items():
        same_kind = isinstance(value, dict) and isinstance(config.get(key), dict) and \
            value.get("type", config[key].get("type")) == config[key].get("type")  # e.g. auth: oidc replaces
        config[key] = {**config[key], **value} if same_kind else value
    return config


def container_name(user: str, server: str = "") -> str:
    """A test user's server container (in the test deployment's namespace)."""
    return OWN.server(user, server)


def home_volume_name(user: str) -> str:
    return names.home_volume_name(user, TEST_CONFIG["volumes"]["homeVolume"])
