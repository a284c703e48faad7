"""Admins steer stack tags at run time (issue 6): hidden tags, session locks, admin starts, pre-warm.

Everything goes through the real deployment: the stackhub-sessions service behind the proxy, the
hub's REST API and spawn form, and the containers on the engine.
"""

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from .browser import admin_browser
from .hubfixture import OWN, container_name

SERVICE = "services/stackhub-sessions/"
REPO = Path(__file__).resolve().parents[2]


def svc(hub, method, path, token=None, **kw):
    kw.setdefault("timeout", 30)
    return requests.request(method, f"{hub.url}{SERVICE}api/{path}", verify=hub.ca,
                            headers={"Authorization": f"token {token or hub.token}"}, **kw)


def ok(r, status=200):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    return r.json()


def form(hub, name) -> str:
    r = hub.session(name, hub.admin_password if name == "admin" else None).get(f"{hub.url}hub/spawn")
    assert r.status_code == 200, r.status_code
    return r.text


def offered(html: str) -> set[str]:
    return set(re.findall(r'name="image_tag"[^>]*value="([^"]+)"', html)) | set(
        re.findall(r'<option value="([^"]+)"', html))


def spawn_status(hub, name, options):
    return hub.api("POST", f"/users/{name}/server", json=options)


def make_group(hub, members) -> str:
    group = f"g-{uuid.uuid4().hex[:6]}"
    r = hub.api("POST", f"/groups/{group}", json={"users": members})
    assert r.status_code == 201, r.text
    return group


def image_of(hub, name):
    return hub.client.containers.get(container_name(name, "")).image.tags


def cli(hub, *args, timeout=600):
    env = {**os.environ, "STACKHUB_STATE": str(hub.deployment.paths.root), "STACKHUB_CONFIG": str(hub.config_file)}
    return subprocess.run([sys.executable, "-m", "spawner.cli.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def service_up(hub):
    """The hub starts its services after it answers: wait for the sessions service's route."""
    deadline = time.monotonic() + 60
    while (r := svc(hub, "GET", "tags")).status_code == 404:
        assert time.monotonic() < deadline, "stackhub-sessions did not come up"
        time.sleep(0.5)
    ok(r)


@pytest.fixture
def tags(hub):
    """(recommended, two other tags) as the service sees them."""
    data = ok(svc(hub, "GET", "tags"))
    others = [t["name"] for t in data["tags"] if not t["recommended"] and t["present"]]
    assert len(others) >= 2, data
    return data["recommended"], others[0], others[1]


def test_a_non_admin_gets_403_from_the_policy_api_and_page(hub, user):
    name = user("nonadmin")
    token = ok(hub.api("POST", f"/users/{name}/tokens", json={"note": "test"}), 201)["token"]
    for method, path, body in [("GET", "tags", None), ("PUT", "tags/w_2026_42", {"hidden": True}),
                               ("PUT", "sessions/x", {"tag": "w_2026_42"}), ("POST", "jobs", {"action": "stop", "user": name})]:
        r = svc(hub, method, path, token=token, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert svc(hub, "GET", "tags", token="not-a-token").status_code == 401
    r = hub.session(name).get(f"{hub.url}{SERVICE}")
    assert r.status_code == 403
    assert ok(svc(hub, "GET", "tags"))["hidden"] == []


def test_hidden_tag_is_refused_to_users_but_not_admins(hub, user, tags):
    recommended, hidden, _ = tags
    name = user("hide")
    assert hidden in offered(form(hub, name))
    ok(svc(hub, "PUT", f"tags/{hidden}", json={"hidden": True}))
    try:
        assert hidden not in offered(form(hub, name))
        r = spawn_status(hub, name, {"image_tag": hidden})
        assert r.status_code == 400 and hidden not in r.json()["message"].split("allowed:")[1], r.text
        assert hub.api("GET", f"/users/{name}").json()["servers"] == {}
        # the recommended tag cannot be hidden (a spawn without image_tag would fail)
        r = svc(hub, "PUT", f"tags/{recommended}", json={"hidden": True})
        assert r.status_code == 409 and "recommend another" in r.json()["message"]
        # an admin still can
        assert hidden in offered(form(hub, "admin"))
        hub.spawn("admin", {"image_tag": hidden})
        assert f"stackhub/lsst-stack:{hidden}" in image_of(hub, "admin")
        hub.stop("admin")
    finally:
        ok(svc(hub, "PUT", f"tags/{hidden}", json={"hidden": False}))
    assert hidden in offered(form(hub, name))
    audit = ok(svc(hub, "GET", "audit?limit=5"))["audit"]
    assert (audit[0]["action"], audit[0]["who"]) == ("tags.show", "service:stackhub-admin")


def test_session_lock_for_a_group(hub, user, tags):
    recommended, locked, other = tags
    member, outsider = user("member"), user("outsider")
    group = make_group(hub, [member])
    session = f"DM tutorial {uuid.uuid4().hex[:4]}"
    q = requests.utils.quote(session, safe="")
    before = offered(form(hub, member))
    assert {locked, other} <= before

    opened = ok(svc(hub, "PUT", f"sessions/{q}", json={"tag": locked, "group": group}))
    try:
        assert opened["status"] == "active" and opened["opened_by"] == "service:stackhub-admin"
        html = form(hub, member)
        assert offered(html) == {locked} and session in html
        r = spawn_status(hub, member, {"image_tag": other})
        assert r.status_code == 400 and session in r.json()["message"], r.text
        assert hub.api("GET", f"/users/{member}").json()["servers"] == {}
        # the outsider is not affected
        assert offered(form(hub, outsider)) == before
        # a lock in the future does not apply yet
        ok(svc(hub, "PUT", f"sessions/{q}", json={"tag": locked, "group": group, "start": "2099-01-01T00:00:00Z"}))
        assert offered(form(hub, member)) == before
        ok(svc(hub, "PUT", f"sessions/{q}", json={"tag": locked, "group": group}))
        # the member's spawn without a tag runs the session's tag (an empty body would, since
        # JupyterHub 6, repeat the options of the last request: the refused one above)
        hub.spawn(member, {"size": "small"})
        assert f"stackhub/lsst-stack:{locked}" in image_of(hub, member)
        hub.stop(member)
    finally:
        ok(svc(hub, "DELETE", f"sessions/{q}"))
    assert offered(form(hub, member)) == before
    actions = [a["action"] for a in ok(svc(hub, "GET", "audit?limit=4"))["audit"]]
    assert actions[0] == "session.close" and "session.open" in actions


def admin_page(hub):
    """The admin's browser session on the service page (hub OAuth), and the page's XSRF token."""
    s = hub.session("admin", hub.admin_password)
    r = s.get(f"{hub.url}{SERVICE}")
    assert r.status_code == 200 and "stack tags, sessions and servers" in r.text, r.status_code
    xsrf = re.search(r'<meta name="xsrf" content="([^"]+)"', r.text).group(1)
    s.headers["X-XSRFToken"] = xsrf
    return s


def wait_job(get, job, timeout=400):
    deadline = time.monotonic() + timeout
    while not job["done"]:
        assert time.monotonic() < deadline, job
        time.sleep(1)
        job = get(job["id"])
    return job


def test_admin_starts_a_users_server_with_a_tag_from_the_page(hub, user, tags):
    _, _, tag = tags
    name = user("started")
    page = admin_page(hub)
    assert ok(page.get(f"{hub.url}{SERVICE}api/users"))["users"]
    # without the page's XSRF token a cookie-authenticated change is refused
    bare = requests.Session()
    bare.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    bare.verify = hub.ca
    bare.cookies.update(page.cookies)
    r = bare.post(f"{hub.url}{SERVICE}api/jobs", json={"action": "stop", "user": name})
    assert r.status_code in (401, 403), (r.status_code, r.text)
    # ... and it is the token that was missing, not the login: the same cookies with it get in
    bare.headers["X-XSRFToken"] = page.headers["X-XSRFToken"]
    r = bare.post(f"{hub.url}{SERVICE}api/jobs", json={"action": "stop", "user": name})
    assert r.status_code == 202 and r.json()["by"] == "admin", (r.status_code, r.text)

    job = ok(page.post(f"{hub.url}{SERVICE}api/jobs", json={"action": "start", "user": name, "tag": tag,
                                                            "size": "small"}), 202)
    job = wait_job(lambda i: ok(page.get(f"{hub.url}{SERVICE}api/jobs/{i}")), job)
    assert job["counts"] == {"ready": 1}, job
    assert f"stackhub/lsst-stack:{tag}" in image_of(hub, name)
    users = {u["name"]: u for u in ok(page.get(f"{hub.url}{SERVICE}api/users"))["users"]}
    assert users[name]["server"]["tag"] == tag and users[name]["server"]["ready"]
    assert ok(svc(hub, "GET", "audit?limit=1"))["audit"][0]["who"] == "admin"
    hub.stop(name)


def starting_at_once(hub, members) -> int:
    """How many of ``members`` have a server the hub has not seen ready yet."""
    users = hub.api("GET", "/users?state=active").json()
    return sum(1 for u in users if u["name"] in members and not all(s.get("ready") for s in u["servers"].values()))


def test_prewarm_a_group_of_five_then_stop_all_with_the_cli(hub, user, tags):
    _, tag, _ = tags
    members = [user("warm") for _ in range(5)]
    group = make_group(hub, members)
    t0 = time.monotonic()
    env = {**os.environ, "STACKHUB_STATE": str(hub.deployment.paths.root), "STACKHUB_CONFIG": str(hub.config_file)}
    proc = subprocess.Popen([sys.executable, "-m", "spawner.cli.main", "prewarm", group, "--tag", tag], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the cap, watched from the hub: never more than 3 (the default) servers starting at once, and 3 do
        most = 0
        deadline = time.monotonic() + 400
        while proc.poll() is None:
            assert time.monotonic() < deadline, "prewarm did not finish in 400s"
            most = max(most, starting_at_once(hub, set(members)))
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - t0
    assert proc.returncode == 0, stdout + stderr
    assert most == 3, f"at most {most} servers were starting at the same time; the cap is 3"
    lines = stdout.splitlines()
    assert lines[0].startswith("starting") and "5 servers" in lines[0] and "3 at a time" in lines[0], lines[0]
    assert any(line.startswith("[5/5]") for line in lines) and "5 ready" in lines[-1]
    for m in members:
        srv = hub.api("GET", f"/users/{m}").json()["servers"][""]
        assert srv["ready"] and f"stackhub/lsst-stack:{tag}" in image_of(hub, m)
    print(f"\nprewarm of 5 servers: {took:.1f}s wall ({lines[-1]})")

    out = cli(hub, "prewarm", group, "--stop")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 stopped" in out.stdout.splitlines()[-1]
    for m in members:
        assert hub.api("GET", f"/users/{m}").json()["servers"] == {}
    # at most 16 at a time, whatever is asked for
    job = ok(svc(hub, "POST", "jobs", json={"action": "stop", "group": group, "concurrency": 99}), 202)
    assert job["concurrency"] == 16, job
    wait_job(lambda i: ok(svc(hub, "GET", f"jobs/{i}")), job, timeout=60)


def test_admin_start_and_prewarm_obey_the_users_lock_and_hidden_tags(hub, user, tags):
    """docs/sessions.md: an admin's start is the hub's own spawn, so the target user's policy applies."""
    _, locked, hidden = tags
    member, plain = user("lockd"), user("plain")
    group = make_group(hub, [member])
    warm = make_group(hub, [member, plain])
    session = f"admin start {uuid.uuid4().hex[:4]}"
    q = requests.utils.quote(session, safe="")
    ok(svc(hub, "PUT", f"tags/{hidden}", json={"hidden": True}))
    ok(svc(hub, "PUT", f"sessions/{q}", json={"tag": locked, "group": group}))
    try:
        job = ok(svc(hub, "POST", "jobs", json={"action": "start", "user": member, "tag": hidden}), 202)
        row = wait_job(lambda i: ok(svc(hub, "GET", f"jobs/{i}")), job, timeout=60)["users"][0]
        assert row["state"] == "failed", row
        assert f"session '{session}': only image_tag '{locked}' may be started, not '{hidden}'" in row["message"]

        out = cli(hub, "prewarm", warm, "--tag", hidden)
        assert out.returncode == 1, out.stdout + out.stderr
        lines = out.stdout.splitlines()
        assert any(f"{member}: failed" in line and f"session '{session}'" in line for line in lines), lines
        assert any(f"{plain}: failed" in line and "hidden by an admin" in line for line in lines), lines
        for name in (member, plain):
            assert hub.api("GET", f"/users/{name}").json()["servers"] == {}

        # what the policy allows starts: the session's tag for the member, an offered tag for the other
        out = cli(hub, "prewarm", warm, "--tag", locked)
        assert out.returncode == 0 and "2 ready" in out.stdout.splitlines()[-1], out.stdout + out.stderr
        for name in (member, plain):
            assert f"stackhub/lsst-stack:{locked}" in image_of(hub, name)
    finally:
        ok(svc(hub, "DELETE", f"sessions/{q}"))
        ok(svc(hub, "PUT", f"tags/{hidden}", json={"hidden": False}))
        assert cli(hub, "prewarm", warm, "--stop").returncode == 0


def test_the_job_list_keeps_the_last_50(hub, user):
    name = user("jobs")
    ids = [ok(svc(hub, "POST", "jobs", json={"action": "stop", "user": name}), 202)["id"] for _ in range(52)]
    until("52 stop jobs done", lambda: all(ok(svc(hub, "GET", f"jobs/{i}"))["done"] for i in ids[-3:])
          and all(j["done"] for j in ok(svc(hub, "GET", "jobs"))["jobs"]))
    listed = [j["id"] for j in ok(svc(hub, "GET", "jobs"))["jobs"]]
    assert listed == ids[-50:], listed
    assert svc(hub, "GET", f"jobs/{ids[1]}").status_code == 404


def test_cli_tags_and_sessions(hub, user, tags):
    recommended, locked, _ = tags
    out = cli(hub, "tags", "list")
    assert out.returncode == 0, out.stderr
    assert re.search(rf"^{recommended}\s.*recommended", out.stdout, re.M)
    group = make_group(hub, [user("clisess")])
    out = cli(hub, "session", "open", "cli tutorial", "--tag", locked, "--group", group, "--end", "2099-01-01T00:00")
    assert out.returncode == 0 and "locked to " + locked in out.stdout, out.stdout + out.stderr
    try:
        listing = cli(hub, "session", "list").stdout
        assert "cli tutorial" in listing and "active" in listing
    finally:
        assert cli(hub, "session", "close", "cli tutorial").returncode == 0
    bad = cli(hub, "session", "close", "cli tutorial")
    assert bad.returncode == 2 and "no session" in bad.stderr


HUB_STATE = "/srv/stackhub/state"  # the hub state volume (hub.stateVolume) in the hub container


def hub_container(hub):
    return hub.client.containers.get(OWN.hub)


def state_file(hub, name, text=None) -> str:
    """Read (or, with ``text``, overwrite in place, as a careless editor would) a file of the hub's state."""
    path = f"{HUB_STATE}/{name}"
    if text is None:
        code, out = hub_container(hub).exec_run(["cat", path])
    else:
        code, out = hub_container(hub).exec_run(["sh", "-c", 'printf %s "$1" > "$2"', "sh", text, path])
    assert code == 0, out
    return out.decode()


def until(what, check, timeout=60):
    """Poll ``check`` until it returns something true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.5)
    return result


def test_a_corrupt_policy_file_keeps_the_lock_logs_and_shows_on_the_page(hub, user, tags):
    """Issue 10 point 6: a corrupt policy.json never fails open, also across a hub restart."""
    _, locked, other = tags
    member = user("corrupt")
    group = make_group(hub, [member])
    session = f"locked {uuid.uuid4().hex[:4]}"
    q = requests.utils.quote(session, safe="")
    ok(svc(hub, "PUT", f"sessions/{q}", json={"tag": locked, "group": group}))
    good = state_file(hub, "policy.json")
    assert session in state_file(hub, "policy.json.last-good")
    try:
        state_file(hub, "policy.json", '{"version": 1, "sessions": [{"name": "' + session[:3])  # truncated
        since = int(time.time()) - 1
        for restarted in (False, True):
            # the lock still holds: another tag is refused with 400 naming the session, nothing starts
            r = spawn_status(hub, member, {"image_tag": other})
            assert r.status_code == 400 and session in r.json()["message"], (restarted, r.status_code, r.text)
            assert hub.api("GET", f"/users/{member}").json()["servers"] == {}
            assert offered(form(hub, member)) == {locked}  # the form is the locked one, not a 500
            # the sessions page and API say what is wrong and what is enforced
            state = ok(svc(hub, "GET", "policy"))
            assert not state["ok"] and state["source"] == "last-good", state
            assert f"{HUB_STATE}/policy.json: not valid JSON" in state["problem"], state
            page = admin_page(hub).get(f"{hub.url}{SERVICE}").text
            assert "The session policy file is unusable" in page and "not valid JSON" in page
            assert session in [s["name"] for s in ok(svc(hub, "GET", "sessions"))["sessions"]]
            # the hub's log has it at error level, naming the file
            needle = f"the tag policy is unusable, {HUB_STATE}/policy.json: not valid JSON".encode()
            until("the error in the hub's log", lambda: needle in hub_container(hub).logs(since=since))
            if not restarted:  # a restarted hub (nothing in memory) reads the last good policy from disk
                since = int(time.time())
                hub_container(hub).restart()
                hub.deployment.wait_ready(hub.tls)
                until("stackhub-sessions after the restart", lambda: svc(hub, "GET", "policy").status_code == 200)
        # an admin repairs it from the page's API: the last good policy comes back, the bad file is kept
        repaired = ok(svc(hub, "POST", "policy/repair", json={"empty": False}))
        assert repaired["ok"] and repaired["source"] == "file", repaired
        assert session in state_file(hub, "policy.json")
        assert state_file(hub, "policy.json.rejected").startswith('{"version": 1, "sessions"')
        assert 'id="policy-problem" role="alert" hidden' in admin_page(hub).get(f"{hub.url}{SERVICE}").text
    finally:
        if not ok(svc(hub, "GET", "policy"))["ok"]:
            state_file(hub, "policy.json", good)
        ok(svc(hub, "DELETE", f"sessions/{q}"))
    assert ok(svc(hub, "GET", "policy"))["ok"]
    assert other in offered(form(hub, member))


def test_the_policy_survives_a_hub_restart_and_down_and_up(hub, user, tags):
    """docs/sessions.md: hidden tags, the recommended override and sessions are kept across restarts
    and `make down` / `make up` (the CLI behind them); the jobs list is not."""
    _, new_recommended, hidden = tags
    member, outsider = user("kept"), user("kept")
    group = make_group(hub, [member])
    session = f"kept {uuid.uuid4().hex[:4]}"
    q = requests.utils.quote(session, safe="")
    ok(svc(hub, "PUT", f"tags/{hidden}", json={"hidden": True}))
    ok(svc(hub, "PUT", "recommended", json={"tag": new_recommended}))
    ok(svc(hub, "PUT", f"sessions/{q}", json={"tag": hidden, "group": group}))  # a session may name a hidden tag
    ok(svc(hub, "POST", "jobs", json={"action": "stop", "user": outsider}), 202)

    def kept(when):
        t = ok(svc(hub, "GET", "tags"))
        assert (t["hidden"], t["recommended"]) == ([hidden], new_recommended), (when, t)
        assert [s["name"] for s in ok(svc(hub, "GET", "sessions"))["sessions"]] == [session], when
        assert offered(form(hub, member)) == {hidden}, when  # the spawner reads it too
        html = form(hub, outsider)
        assert hidden not in offered(html) and f"Recommended ({new_recommended})" in html, when
        r = spawn_status(hub, outsider, {"image_tag": hidden})
        assert r.status_code == 400 and "hidden by an admin" in r.json()["message"], (when, r.text)

    def answers():
        try:
            return svc(hub, "GET", "tags", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def service_back():
        until("stackhub-sessions", answers, timeout=120)

    try:
        kept("before")
        assert ok(svc(hub, "GET", "jobs"))["jobs"]
        hub_container(hub).restart()
        hub.deployment.wait_ready(hub.tls)
        service_back()
        kept("after a hub restart")
        assert ok(svc(hub, "GET", "jobs"))["jobs"] == []  # jobs live in the service's memory only

        down = cli(hub, "down", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        until("the hub container gone", lambda: OWN.hub not in [c.name for c in hub.client.containers.list()])
        up = cli(hub, "up", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        service_back()
        kept("after down and up")
    finally:
        if not answers():  # a failed down/up: bring the test deployment back before restoring the policy
            hub.deployment.up()
        service_back()
        ok(svc(hub, "DELETE", f"sessions/{q}"))
        ok(svc(hub, "PUT", "recommended", json={"tag": None}))
        ok(svc(hub, "PUT", f"tags/{hidden}", json={"hidden": False}))
    t = ok(svc(hub, "GET", "tags"))
    assert t["hidden"] == [] and t["recommended"] == t["configured_recommended"]


@pytest.mark.browser
def test_the_page_in_a_browser_starts_a_users_server_and_hides_a_tag(hub, user, tags):
    """The admin's page driven in Chromium: the Users table's Start, then Hide/Show of a tag."""
    _, hidden, tag = tags
    name = user("browser")
    with admin_browser(hub, "sessions-page.png") as (page, errors):
        page.goto(f"{hub.url}{SERVICE}")
        row = page.locator("#users tbody tr", has_text=name)
        row.locator("select").first.select_option(tag)
        row.get_by_role("button", name="Start").click()
        box = page.locator("#jobs > div", has_text=f"Start {name} with {tag}")
        box.locator("text=(finished)").wait_for()
        assert "1/1 done, 0 failed" in box.inner_text()
        assert f"stackhub/lsst-stack:{tag}" in image_of(hub, name)

        page.locator("#tags tbody tr", has_text=hidden).get_by_role("button", name="Hide").click()
        page.locator("#message", has_text=f"{hidden} hidden").wait_for()
        assert ok(svc(hub, "GET", "tags"))["hidden"] == [hidden]
        page.locator("#tags tbody tr", has_text=hidden).get_by_role("button", name="Show").click()
        page.locator("#message", has_text=f"{hidden} shown").wait_for()
        assert ok(svc(hub, "GET", "tags"))["hidden"] == []
        assert errors == []
    hub.stop(name)
