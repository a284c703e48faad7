"""OAuth login end to end: a real OpenID Connect provider, the real hub, headless Chromium.

The provider (oidc_provider.py, on Authlib) is registered the strict way many sites run theirs:
the client may only authenticate with ``client_secret_basic`` and every authorization request
must carry a ``nonce``. A second provider accepts only ``client_secret_post`` (the hub must follow
discovery, not assume). The hub is reconfigured for ``auth.type: oidc`` for this module and
restored to the shared-password default afterwards. Chromium (Debian's, driven by Playwright) trusts the stackhub
CA through a fresh NSS database; no certificate error is ignored. Screenshots of every step go to
test-artifacts/oauth/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from spawner.deploy.single_host import hub_container

from .browser import CHROMIUM, CHROMIUM_ARGS
from .conftest import TEST_USERS
from .idp import ADA, EVE, GRACE, start_provider
from .hubfixture import ARTIFACTS, OWN, with_test_defaults

SHOTS = ARTIFACTS / "oauth"

pytestmark = pytest.mark.browser


LOGIN_SERVICE = "Test IdP"


def oauth_config(hub, idp) -> dict:
    return {
        "auth": {
            "type": "oidc",
            "clientId": idp.client_id,
            "issuer": idp.issuer,
            "caFile": str(Path(hub.ca).resolve()),
            "loginService": LOGIN_SERVICE,
            "allowedGroups": ["lsst-tutorial"],
            "adminGroups": ["lsst-admins"],
            "instructorGroups": ["lsst-teachers"],
        }
    }


def provider(hub, docker_client, workdir, **kw):
    return start_provider(docker_client, workdir=workdir, ca_dir=Path(hub.ca).parent,
                          network=hub.deployment.cfg.hub.network, redirect_uri=f"{hub.url}hub/oauth_callback",
                          client_secret=secrets.token_urlsafe(24), **kw)


@pytest.fixture(scope="module")
def idp(hub, docker_client, tmp_path_factory):
    """The strict provider: client_secret_basic only, nonce required."""
    p = provider(hub, docker_client, tmp_path_factory.mktemp("idp"))
    yield p
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "oauth-idp.log").write_text(p.logs())
    p.stop()


def restore(hub):
    hub.dump_logs("oauth")
    for u in (ADA, GRACE, EVE):
        q = u.username
        if hub.api("GET", f"/users/{q}").status_code == 200:
            hub.api("DELETE", f"/users/{q}/server")
    hub.reconfigure()


@pytest.fixture(scope="module")
def oauth_hub(hub, idp):
    """The test hub logging in through the strict provider; the shared-password default is restored afterwards."""
    TEST_USERS.update(u.username for u in (ADA, GRACE, EVE))  # their containers and homes go at the end
    try:
        hub.reconfigure(oauth_config(hub, idp), environment={"STACKHUB_OAUTH_CLIENT_SECRET": idp.client_secret})
        yield hub
    finally:
        restore(hub)


@pytest.fixture(scope="module")
def browser(hub, tmp_path_factory):
    """Debian's Chromium, trusting the stackhub CA through its own NSS database (a fresh HOME)."""
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-n", "stackhub local CA", "-t", "C,,",
                    "-i", hub.ca], check=True)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            env={**os.environ, "HOME": str(home)},
            args=CHROMIUM_ARGS,
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser profile (no cookies) per test; its console goes to the artifacts on failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    console = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{request.node.name}-failure.png"))
        (SHOTS / f"{request.node.name}-console.log").write_text("\n".join([f"url: {pg.url}", *console]))
    context.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def login(page, hub, user, prefix, issuer):
    """Open the hub, follow it to the provider, log in there; return the response of the hub's callback."""
    page.goto(hub.url)
    page.wait_for_url(re.compile(r"/hub/login"))
    shot(page, f"{prefix}-1-hub-login")
    button = page.get_by_role("button", name=f"Sign in with {LOGIN_SERVICE}")
    with page.expect_navigation(url=re.compile(re.escape(issuer) + "/auth")):
        button.click()
    # the hub sent a nonce (the strict provider would have refused the request before its login page)
    assert "nonce=" in page.url
    page.wait_for_selector("#login")
    shot(page, f"{prefix}-2-provider-login")
    page.fill("#login", user.email)
    page.fill("#password", user.password)
    with page.expect_response(lambda r: "/hub/oauth_callback" in r.url) as callback:
        page.click("#submit-login")
    page.wait_for_load_state()
    return callback.value


def test_login_spawn_run_butler_and_stop(oauth_hub, idp, page, stack_tags):
    hub = oauth_hub
    login(page, hub, ADA, "ada", idp.issuer)
    page.wait_for_url(re.compile(r"/hub/spawn"))
    shot(page, "ada-3-spawn-form")

    # a tag other than the one the form checks by default, so the pick must take effect
    unchecked = page.locator("input[name=image_tag]:not(:checked)")
    tag = next(v for v in (unchecked.nth(i).get_attribute("value") for i in range(unchecked.count()))
               if v in stack_tags)
    page.check(f"input[name=image_tag][value='{tag}']")
    shot(page, "ada-4-tag-picked")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(rf"/user/{ADA.username}/lab"), timeout=240_000)
    page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    shot(page, "ada-5-jupyterlab")

    model = hub.api("GET", f"/users/{ADA.username}").json()
    assert model["servers"][""]["user_options"]["image_tag"] == tag

    page.locator('.jp-LauncherCard[data-category="Notebook"][title="LSST"]').click()
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content")
    # run only once the kernel is up (a cell run before that is not sent to any kernel)
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"LSST \| Idle")).first.wait_for(timeout=120_000)
    page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first.click()
    page.keyboard.type("import lsst.daf.butler\nprint('butler', lsst.daf.butler.__version__)")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel .jp-OutputArea-output").first
    output.wait_for(timeout=120_000)
    text = output.inner_text()
    shot(page, "ada-6-butler-cell")
    assert re.match(r"butler \d+\.\d+", text.strip()), text

    page.goto(f"{hub.url}hub/home")
    shot(page, "ada-7-hub-home")
    page.click("#stop")
    page.wait_for_selector("#start:has-text('Start My Server')", timeout=90_000)
    shot(page, "ada-8-server-stopped")
    deadline = time.monotonic() + 60  # the page says stopped once the hub accepted the stop
    while "" in hub.api("GET", f"/users/{ADA.username}").json()["servers"]:
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.5)

    # logout clears the hub session: the home page asks for a login again
    page.goto(f"{hub.url}hub/logout")
    page.goto(f"{hub.url}hub/home")
    page.wait_for_url(re.compile(r"/hub/login"))
    shot(page, "ada-9-logged-out")


def test_instructors_group_from_the_provider(oauth_hub, idp, page):
    hub = oauth_hub
    login(page, hub, ADA, "instructor", idp.issuer)
    page.wait_for_url(re.compile(r"/hub/(spawn|home|user)"))
    user = hub.api("GET", f"/users/{ADA.username}").json()
    assert "instructors" in user["groups"], user
    assert user["admin"] is False
    group = hub.api("GET", "/groups/instructors").json()
    assert ADA.username in group["users"]
    assert page.goto(f"{hub.url}hub/admin").status == 403  # an instructor is no admin


def test_user_outside_allowed_groups_is_refused(oauth_hub, idp, page):
    hub = oauth_hub
    response = login(page, hub, EVE, "eve", idp.issuer)
    assert response.status == 403
    body = page.inner_text("body")
    shot(page, "eve-3-refused")
    assert "403" in body
    assert "not allowed to use this hub" in body and "not in a group this hub admits" in body
    assert hub.api("GET", f"/users/{EVE.username}").status_code == 404  # no user was created


def test_admin_group_user_sees_admin_page(oauth_hub, idp, page):
    hub = oauth_hub
    login(page, hub, GRACE, "grace", idp.issuer)
    page.wait_for_url(re.compile(r"/hub/(spawn|home|user)"))
    assert hub.api("GET", f"/users/{GRACE.username}").json()["admin"] is True
    response = page.goto(f"{hub.url}hub/admin")
    assert response.status == 200
    # the React admin page renders its controls and lists the users
    page.get_by_test_id("stop-all").wait_for()
    # searched by name, as an admin would: after a whole session the hub has more users than the page's
    # first 50 (JupyterHub 6's page ignores a name_filter in its own URL)
    page.get_by_label("user-search").fill(GRACE.username)
    page.locator("[data-testid=user-row-name]", has_text=GRACE.username).first.wait_for()
    shot(page, "grace-3-admin-page")


def test_provider_error_on_the_callback_is_a_page_naming_it(oauth_hub, page):
    response = page.goto(f"{oauth_hub.url}hub/oauth_callback?error=access_denied&error_description=User+said+no")
    shot(page, "callback-error")
    assert response.status == 400
    body = page.inner_text("body")
    assert f"The login provider {LOGIN_SERVICE} refused the login: access_denied (User said no)" in body, body


def test_wrong_client_secret_is_a_page_naming_the_providers_answer(oauth_hub, idp, page):
    """The provider refuses the token request (401 invalid_client): a 502 page quoting it, not a 500."""
    hub = oauth_hub
    hub.reconfigure(oauth_config(hub, idp), environment={"STACKHUB_OAUTH_CLIENT_SECRET": "not-the-secret"})
    try:
        response = login(page, hub, ADA, "wrong-secret", idp.issuer)
        shot(page, "wrong-secret-3-error")
        body = page.inner_text("body")
        assert response.status == 502, body
        assert f"The login provider {LOGIN_SERVICE} refused the hub's token request (HTTP 401 invalid_client" in body
        assert "not-the-secret" not in body
    finally:
        hub.reconfigure(oauth_config(hub, idp), environment={"STACKHUB_OAUTH_CLIENT_SECRET": idp.client_secret})


def test_provider_that_takes_the_secret_only_in_the_form(oauth_hub, idp, docker_client, tmp_path, page):
    """Discovery lists only client_secret_post (and no nonce is required): the hub follows it."""
    hub = oauth_hub
    post = provider(hub, docker_client, tmp_path / "idp-post", auth_method="client_secret_post",
                    require_nonce=False)
    try:
        hub.reconfigure(oauth_config(hub, post), environment={"STACKHUB_OAUTH_CLIENT_SECRET": post.client_secret})
        login(page, hub, GRACE, "post", post.issuer)
        page.wait_for_url(re.compile(r"/hub/(spawn|home|user)"))
        shot(page, "post-3-logged-in")
        assert hub.api("GET", f"/users/{GRACE.username}").json()["admin"] is True
        assert "POST /token" in post.logs() and " 200 " in post.logs()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "oauth-idp-post.log").write_text(post.logs())
        post.stop()
        hub.reconfigure(oauth_config(hub, idp), environment={"STACKHUB_OAUTH_CLIENT_SECRET": idp.client_secret})


@pytest.mark.parametrize("auth_change, environment, needle", [
    ({}, {}, "STACKHUB_OAUTH_CLIENT_SECRET"),
    ({"issuer": "https://stackhub-nowhere:5556/dex"}, {"STACKHUB_OAUTH_CLIENT_SECRET": "never-logged-4711"},
     "https://stackhub-nowhere:5556/dex/.well-known/openid-configuration"),
])
def test_hub_refuses_to_start_half_configured(hub, idp, tmp_path, auth_change, environment, needle):
    """Missing secret or unreachable provider: the hub process exits naming the setting or URL."""
    import yaml

    from spawner.core.config import load_config

    config = with_test_defaults(oauth_config(hub, idp))
    config["auth"] = {**config["auth"], **auth_change}
    config_file = tmp_path / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    spec = hub_container(load_config(config_file), hub.deployment.paths, config_file, environment)
    spec.update(name=f"{OWN.hub}-badauth-{secrets.token_hex(3)}", restart_policy=None, detach=True,
                labels={"stackhub.role": "test"})
    c = hub.client.containers.run(**spec)
    try:
        result = c.wait(timeout=120)
        logs = c.logs().decode(errors="replace")
    finally:
        c.remove(force=True)
    assert result["StatusCode"] != 0, logs
    assert needle in logs, logs
    assert "never-logged-4711" not in logs


def test_client_secret_from_the_environment_is_not_in_docker_inspect(oauth_hub, idp):
    inspect = json.dumps(oauth_hub.client.api.inspect_container(OWN.hub))
    assert "STACKHUB_OAUTH_CLIENT_SECRET_FILE" in inspect and idp.client_secret not in inspect


def test_client_secret_file_is_mounted_read_only_and_not_in_docker_inspect(oauth_hub, idp, tmp_path):
    hub = oauth_hub
    secret_file = tmp_path / "oidc-secret"
    secret_file.touch(0o600)
    secret_file.write_text(idp.client_secret + "\n")
    config = oauth_config(hub, idp)
    config["auth"]["clientSecretFile"] = str(secret_file)
    try:
        hub.reconfigure(config)  # no secret in the environment: the file is the only route
        inspect = hub.client.api.inspect_container(OWN.hub)
        mount = next(m for m in inspect["Mounts"] if m["Source"] == str(secret_file))
        assert mount["RW"] is False
        assert idp.client_secret not in json.dumps(inspect)
    finally:
        hub.reconfigure(oauth_config(hub, idp), environment={"STACKHUB_OAUTH_CLIENT_SECRET": idp.client_secret})


def test_up_refuses_a_missing_secret_before_it_starts_anything(oauth_hub, idp, tmp_path):
    import sys

    import yaml

    hub = oauth_hub
    config_file = tmp_path / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(with_test_defaults(oauth_config(hub, idp))))
    before = {c.name: c.id for c in hub.client.containers.list(all=True)}
    env = {k: v for k, v in os.environ.items() if k != "STACKHUB_OAUTH_CLIENT_SECRET"}
    env.update(STACKHUB_STATE=str(hub.deployment.paths.root), STACKHUB_CONFIG=str(config_file))
    up = subprocess.run([sys.executable, "-m", "spawner.cli.main", "up"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode != 0
    assert "STACKHUB_OAUTH_CLIENT_SECRET" in up.stderr, up.stderr
    assert {c.name: c.id for c in hub.client.containers.list(all=True)} == before  # nothing (re)started
