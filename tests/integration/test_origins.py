"""A helper's click must never hand over the hub (subdomain mode, the default).

An attendee serves an HTML page from their own server, behind the lab's ``/user/NAME/proxy/PORT/``.
A logged-in admin opens the link in Chromium and clicks through every consent page. The page then
tries what a page on the hub's origin could do: read the hub's XSRF token from ``/hub/home`` and call
the hub's API with the admin's cookie, first by relative URLs (its own origin), then at the hub's
absolute URL (cross-origin). With each user server on its own origin, none of it may change anything:
not the attendee's admin flag, not another user, not a token.

The same page on the hub's origin (``hub.subdomains: false``) would make the attendee an admin: that
is the attack this mode ends; docs/security.md says what helpers may open in the fallback.
"""

from __future__ import annotations

import base64
import json
import re
import uuid

from .browser import admin_browser
from .conftest import TEST_USERS
from .hubfixture import container_name

PORT = 8765
EVIL = """<!doctype html><html><head><title>my notebook is broken</title></head><body><p>please help</p>
<script>
async function attempt(base) {
  const r = {};
  try {
    const home = await fetch(base + "/hub/home", {credentials: "include"});
    r.home = home.status;
    const m = (await home.text()).match(/xsrf_token:\\s*"([^"]+)"/);
    r.xsrf = !!m;
    const h = {"Content-Type": "application/json"};
    if (m) h["X-XSRFToken"] = m[1];
    const patch = await fetch(base + "/hub/api/users/MALLORY", {method: "PATCH", credentials: "include",
                                                                 headers: h, body: JSON.stringify({admin: true})});
    r.patch = patch.status;
    const token = await fetch(base + "/hub/api/users/admin/tokens", {method: "POST", credentials: "include",
                                                                      headers: h, body: JSON.stringify({note: "x"})});
    r.token = token.status;
    const other = await fetch(base + "/hub/api/users/VICTIM", {method: "DELETE", credentials: "include", headers: h});
    r.other = other.status;
  } catch (e) { r.error = String(e); }
  return r;
}
(async () => {
  const out = {own_origin: await attempt(""), hub_origin: await attempt("HUB")};
  document.body.setAttribute("data-result", JSON.stringify(out));
  document.title = "done";
})();
</script></body></html>
"""


def _name(base):
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    TEST_USERS.add(name)
    return name


def test_an_attendees_page_opened_by_an_admin_cannot_act_on_the_hub(hub):
    mallory, victim = _name("mallory"), _name("victim")
    hub.create_user(victim)
    hub.session(mallory, password="mallorys-own-pw", room_code=hub.password)  # claims the name
    hub.spawn(mallory)
    origin = hub.origin(mallory)
    assert origin != hub.url and mallory in origin, origin  # a host of its own
    page_html = EVIL.replace("MALLORY", mallory).replace("VICTIM", victim).replace("HUB", hub.url.rstrip("/"))
    # the attendee (uid 1000) writes the page into their home and serves it from their own server
    encoded = base64.b64encode(page_html.encode()).decode()
    code, out = hub.client.containers.get(container_name(mallory)).exec_run(
        ["bash", "-c", f"mkdir -p ~/site && cd ~/site && echo {encoded} | base64 -d > evil.html && "
                       f"(nohup python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 &) && sleep 1 && echo ok"],
        user="1000")
    assert code == 0 and b"ok" in out, out
    before = hub.api("GET", "/users").json()
    tokens_before = hub.api("GET", "/users/admin/tokens").json()

    with admin_browser(hub, "origins-attack.png") as (page, _errors):
        page.goto(f"{origin}user/{mallory}/proxy/{PORT}/evil.html")
        for _ in range(3):  # every consent page the hub shows, clicked through as a helper would
            if page.title() == "done" or "oauth2/authorize" not in page.url:
                break
            page.get_by_role("button", name=re.compile("Authorize", re.I)).click()
            page.wait_for_load_state()
        page.wait_for_function("document.title === 'done'", timeout=60_000)
        assert re.match(re.escape(origin), page.url), page.url  # the page ran on the attendee's origin
        result = json.loads(page.get_attribute("body", "data-result"))

    # nothing changed on the hub
    assert hub.api("GET", f"/users/{mallory}").json()["admin"] is False, result
    assert hub.api("GET", f"/users/{victim}").status_code == 200, result
    after = hub.api("GET", "/users").json()
    assert sorted((u["name"], u["admin"]) for u in after) == sorted((u["name"], u["admin"]) for u in before)
    # the one new token is the OAuth token the hub gave the attendee's server for the admin's visit
    # (scoped to that server); the page minted none
    new = [t for t in hub.api("GET", "/users/admin/tokens").json()["api_tokens"]
           if t["id"] not in {b["id"] for b in tokens_before["api_tokens"]}]
    assert all(t.get("oauth_client") and t.get("note") != "x" for t in new), (new, result)
    # and why: on its own origin the page holds no hub session (what it reads is the login page's
    # anonymous token), so every call is refused; the hub's origin does not let it read or write at all
    own, cross = result["own_origin"], result["hub_origin"]
    assert all(own.get(k) in (401, 403) for k in ("patch", "token", "other")), result
    assert "error" in cross or all(cross.get(k) in (401, 403) for k in ("patch", "token", "other")), result


def test_on_the_shared_origin_an_admin_cannot_open_an_attendees_server(hub):
    """The fallback (``hub.subdomains: false``): the same page is on the hub's origin, so the admin
    must not reach it at all. Admins hold stackhub-admin, not JupyterHub's admin role: the hub refuses
    them the attendee's server (403) and the page never runs; the admins' own pages still work."""
    mallory = _name("mallory")
    hub.reconfigure({"hub": {"subdomains": False}})
    try:
        hub.session(mallory, password="mallorys-own-pw", room_code=hub.password)
        hub.spawn(mallory)
        assert hub.origin(mallory) == hub.url
        code, out = hub.client.containers.get(container_name(mallory)).exec_run(
            ["bash", "-c", f"mkdir -p ~/site && cd ~/site && echo '<title>pwn</title>' > evil.html && "
                           f"(nohup python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 &) && echo ok"],
            user="1000")
        assert code == 0, out
        with admin_browser(hub, "origins-shared-refused.png") as (page, _errors):
            r = page.goto(f"{hub.url}user/{mallory}/proxy/{PORT}/evil.html")
            # JupyterHub's own 403, before any consent page: the admin holds no access:servers
            assert r.status == 403 and page.title() != "pwn", (r.status, page.url, page.title())
            assert "oauth2/authorize" in page.url
            # still an admin where stackhub needs one: the admin page and the sessions page
            assert page.goto(f"{hub.url}hub/admin").status == 200
            assert page.goto(f"{hub.url}services/stackhub-sessions/").status == 200
        model = hub.api("GET", "/users/admin").json()
        assert model["admin"] is False and "stackhub-admins" in model["groups"], model
        assert hub.api("GET", f"/users/{mallory}").json()["admin"] is False
    finally:
        hub.reconfigure()
