"""The attendee who wants in: each attempt made with only the room code and a shell in one's own
server, against the real hub. Each must fail, and the deployment must not change.

docs/security.md lists these attempts with their results. Network paths are tried in
test_isolation.py, course-service paths in test_courses.py.
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid

import pytest
import requests

from .hubfixture import OWN, container_name

from .conftest import TEST_USERS


def new_name(base):
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    TEST_USERS.add(name)
    return name


REFUSED = "Wrong name, password or room code."


def browser(hub):
    s = requests.Session()
    s.trust_env = False
    s.verify = hub.ca
    return s


def post_login(hub, username, password, room_code="", again=None, headers=None):
    """POST the login form as a browser would (a claim types the password twice); (session, response)."""
    s = browser(hub)
    s.get(f"{hub.url}hub/login", headers=headers or {})
    data = {"username": username, "password": password, "otp": room_code,
            "password2": password if again is None else again, "_xsrf": s.cookies.get("_xsrf")}
    return s, s.post(f"{hub.url}hub/login", data=data, allow_redirects=True, headers=headers or {})


def try_login(hub, username, password, room_code="", again=None):
    """POST the login form as a browser would; return (logged in?, the page's error text, session)."""
    s, r = post_login(hub, username, password, room_code, again)
    logged_in = "/hub/login" not in r.url and r.status_code == 200
    error = re.search(r'class="login_error">([^<]*)<', r.text)
    return logged_in, (html.unescape(error.group(1)) if error else ""), s


@pytest.fixture(scope="module")
def infra(hub):
    """The deployment's own containers as they were: nothing an attendee does may change them."""
    before = {c.name: (c.id, c.status) for c in hub.client.containers.list(filters={"label": "stackhub.role"})
              if c.labels.get("stackhub.role") in ("hub", "proxy")}
    assert {OWN.hub, OWN.proxy} <= set(before), before
    yield before
    after = {name: (c.id, c.status) for name in before for c in [hub.client.containers.get(name)]}
    assert after == before, "the deployment's containers changed"


def test_room_code_does_not_open_another_attendees_account(hub, infra):
    victim = new_name("victim")
    ok, _, _ = try_login(hub, victim, "victims-own-pw", hub.password)
    assert ok, "a new attendee could not claim a name with the room code"
    for password, code in ((hub.password, hub.password), (hub.password, ""), ("guess-1234", hub.password)):
        ok, error, s = try_login(hub, victim, password, code)
        assert not ok and REFUSED in error
        assert s.get(f"{hub.url}hub/api/user").status_code == 403
    for spelling in (victim.upper(), f"  {victim} "):
        ok, error, _ = try_login(hub, spelling, "attackers-pw", hub.password)
        assert not ok and REFUSED in error, spelling
    assert try_login(hub, victim, "victims-own-pw")[0]  # the owner still gets in


def test_room_code_does_not_open_an_instructor_or_admin(hub, infra):
    teacher = new_name("teach")
    # an admin makes an instructor account before giving it a password: the room code cannot claim it
    assert hub.api("POST", f"/users/{teacher}").status_code == 201
    assert hub.api("POST", "/groups/instructors/users", json={"users": [teacher]}).status_code == 200
    ok, error, _ = try_login(hub, teacher, "attackers-pw", hub.password)
    assert not ok and "never opens with the room code" in error
    for admin in ("admin", "Admin", "ADMIN"):
        ok, error, _ = try_login(hub, admin, hub.password, hub.password)
        assert not ok and "admin account" in error, admin
    # the instructor gets a password from an admin, and that one works
    assert hub.session(teacher).get(f"{hub.url}hub/api/user").json()["name"] == teacher


@pytest.mark.parametrize("name", ["proxy", "hub", "root", "stackhub-hub", "jupyterhub"])
def test_reserved_names_are_refused_and_nothing_is_created(hub, infra, name):
    ok, error, _ = try_login(hub, name, "attackers-pw", hub.password)
    assert not ok and ("reserved" in error or "not allowed" in error), error
    assert hub.api("GET", f"/users/{name}").status_code == 404
    r = hub.api("POST", f"/users/{name}")  # not even an admin creates an account with such a name
    assert r.status_code == 400


def test_users_servers_never_take_an_infrastructure_name(hub):
    for name in ("hub", "proxy"):
        assert container_name(name) not in (OWN.hub, OWN.proxy)


def test_a_container_that_is_not_the_users_server_is_left_alone(hub, infra, stack_tags):
    """A container holding a user's server name with other labels: the spawn refuses, it survives."""
    name = new_name("squat")
    hub.create_user(name)
    squatter = hub.client.containers.run(
        f"stackhub/lsst-stack:{stack_tags[0]}", ["sleep", "300"], entrypoint=[],
        name=container_name(name), detach=True, labels={"stackhub.role": "test"})
    try:
        r = hub.api("POST", f"/users/{name}/server", json={"image_tag": stack_tags[0]})
        assert r.status_code in (202, 409), r.text
        if r.status_code == 409:
            assert "is not this server" in r.json()["message"]
        deadline = time.monotonic() + 60  # a spawn that went on in the background fails there
        while (model := hub.api("GET", f"/users/{name}").json())["pending"]:
            assert time.monotonic() < deadline, model
            time.sleep(0.5)
        assert "" not in model["servers"], model
        squatter.reload()
        assert squatter.status == "running" and squatter.labels["stackhub.role"] == "test"
    finally:
        squatter.remove(force=True)


def test_user_container_has_no_capabilities_and_limits(hub, user, stack_tags, infra):
    name = user("caps")
    hub.spawn(name, {"image_tag": stack_tags[0]})
    c = hub.client.containers.get(container_name(name))

    def sh(cmd):
        code, out = c.exec_run(["sh", "-c", cmd], user="1000")
        return code, out.decode()

    status = sh("cat /proc/1/status")[1]
    assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^CapBnd:\s+0+$", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert sh("ulimit -n")[1].strip() == "8192"
    code, out = sh("touch /usr/local/x /opt/x 2>&1")
    assert code != 0 and "Read-only file system" in out
    assert sh('touch /tmp/x "$HOME/x" && echo ok')[1].strip() == "ok"
    # a thread/fork bomb stops at the pids limit, and the hub still answers
    code, out = sh("python3 - <<'EOF'\n"
                   "import threading, time\n"
                   "n = 0\n"
                   "try:\n"
                   "    for n in range(10000):\n"
                   "        threading.Thread(target=time.sleep, args=(20,), daemon=True).start()\n"
                   "except RuntimeError:\n"
                   "    pass\n"
                   "print(n)\n"
                   "EOF")
    assert code == 0 and int(out.split()[-1]) < 2048, out
    assert hub.api("GET", "/").status_code == 200
    inspect = hub.client.api.inspect_container(c.id)["HostConfig"]
    assert inspect["CapDrop"] == ["ALL"] and inspect["PidsLimit"] == 2048 and inspect["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in inspect["SecurityOpt"]
    hub.stop(name)


def test_secrets_are_not_in_docker_inspect(hub, infra):
    for name in (OWN.hub, OWN.proxy):
        text = json.dumps(hub.client.api.inspect_container(name))
        for secret in (hub.password, hub.admin_password, hub.token):
            assert secret not in text, f"a secret shows in docker inspect {name}"


# -- accounts with a lifecycle (issue 22) ----------------------------------------------------------------


def me(hub, s) -> str | None:
    r = s.get(f"{hub.url}hub/api/user")
    return r.json()["name"] if r.status_code == 200 else None


def model(hub, name) -> dict | None:
    r = hub.api("GET", f"/users/{name}")
    return r.json() if r.status_code == 200 else None


def steady(m: dict | None) -> dict | None:
    """What a refused attempt must leave as it was (last_activity moves on its own)."""
    return m and {k: m[k] for k in ("name", "admin", "groups", "servers", "pending")}


def test_passwords_of_any_length_work_and_a_long_wrong_one_is_refused_not_a_500(hub, infra):
    name = new_name("long")
    long = "a passphrase much longer than bcrypt's seventy-two bytes " * 4
    ok, error, s = try_login(hub, name, long, hub.password)
    assert ok, error
    for wrong in (long[:-1], long[:72], long + "x"):
        _, r = post_login(hub, name, wrong)
        assert r.status_code == 403 and REFUSED in html.unescape(r.text)
    assert try_login(hub, name, long)[0]


def test_the_claim_asks_the_password_twice_and_a_mismatch_claims_nothing(hub, infra):
    assert 'name="password2"' in browser(hub).get(f"{hub.url}hub/login").text
    name = new_name("twice")
    for again in ("my-own-passw0rd", ""):
        ok, error, _ = try_login(hub, name, "my-own-password", hub.password, again=again)
        assert not ok and "differ" in error
    assert model(hub, name) is None  # no account was made
    assert try_login(hub, name, "my-own-password", hub.password)[0]
    # the name is claimed: another claim of it is a wrong password, with the one text for all of them
    ok, error, _ = try_login(hub, name, "attackers-pw", hub.password)
    assert not ok and REFUSED in error
    ok, error, _ = try_login(hub, new_name("nobody"), "attackers-pw")
    assert not ok and REFUSED in error


def change_password(hub, s, old, new, again=None):
    page = s.get(f"{hub.url}hub/auth/change-password")
    assert page.status_code == 200
    return s.post(f"{hub.url}hub/auth/change-password", data={
        "old_password": old, "password": new, "password2": new if again is None else again,
        "_xsrf": s.cookies.get("_xsrf")})


def test_changing_a_password_needs_the_old_one_and_ends_the_other_sessions(hub, infra):
    name = new_name("change")
    ok, _, here = try_login(hub, name, "first-password", hub.password)
    assert ok
    there = try_login(hub, name, "first-password")[2]
    token = hub.api("POST", f"/users/{name}/tokens", json={"note": "a script"}).json()["token"]
    page = here.get(f"{hub.url}hub/auth/change-password").text
    assert "jupyterhub-logo" in page or "navbar" in page  # JupyterHub's page.html around the form
    for old, new, again, why in (("wrong-old-pw", "second-password", None, "current password is wrong"),
                                 ("first-password", "second-password", "second-passw0rd", "differ"),
                                 ("first-password", "short", None, "at least")):
        r = change_password(hub, here, old, new, again)
        assert r.status_code == 400 and why in html.unescape(r.text)
        assert me(hub, there) == name  # nothing changed: the other session is still in
    r = change_password(hub, here, "first-password", "second-password " * 6)
    assert r.status_code == 200 and "has been changed" in r.text
    assert me(hub, here) == name and me(hub, there) is None
    auth = requests.get(f"{hub.url}hub/api/user", headers={"Authorization": f"token {token}"}, verify=hub.ca)
    assert auth.status_code == 403
    assert not try_login(hub, name, "first-password")[0]
    assert try_login(hub, name, "second-password " * 6)[0]


def test_an_admin_reset_ends_every_session_and_token_and_stops_the_servers(hub, infra, stack_tags):
    name = new_name("reset")
    ok, _, s = try_login(hub, name, "attendee-password", hub.password)
    assert ok
    token = hub.api("POST", f"/users/{name}/tokens", json={"note": "a script"}).json()["token"]
    hub.spawn(name, {"image_tag": stack_tags[0]})
    r = hub.api("POST", f"/stackhub/users/{name}/password")
    assert r.status_code == 200 and r.json()["stopped"] == ["(default)"], r.text
    assert me(hub, s) is None
    assert requests.get(f"{hub.url}hub/api/user", headers={"Authorization": f"token {token}"},
                        verify=hub.ca).status_code == 403
    deadline = time.monotonic() + 60  # a stop slower than the hub's slow_stop_timeout ends in the background
    while model(hub, name)["servers"]:
        assert time.monotonic() < deadline, model(hub, name)
        time.sleep(0.5)
    assert not try_login(hub, name, "attendee-password")[0]
    assert try_login(hub, name, r.json()["password"])[0]


def test_making_a_claimed_name_staff_is_refused_until_an_admin_takes_it_over(hub, infra):
    name = new_name("claim")
    ok, _, s = try_login(hub, name, "attendee-password", hub.password)
    assert ok
    before = steady(model(hub, name))
    group = hub.api("GET", "/groups/instructors").json()["users"]
    r = hub.api("POST", "/groups/instructors/users", json={"users": [name]})
    assert r.status_code == 409 and "take-over" in r.json()["message"]
    r = hub.api("PATCH", f"/users/{name}", json={"admin": True})
    assert r.status_code == 409 and "take-over" in r.json()["message"]
    assert steady(model(hub, name)) == before and hub.api("GET", "/groups/instructors").json()["users"] == group
    assert me(hub, s) == name  # the refusals changed nothing
    r = hub.api("POST", f"/stackhub/users/{name}/take-over", json={"instructor": True})
    assert r.status_code == 200, r.text
    assert me(hub, s) is None and "instructors" in model(hub, name)["groups"]
    assert not try_login(hub, name, "attendee-password")[0]
    ok, error, _ = try_login(hub, name, "attendee-password", hub.password)
    assert not ok and "never opens with the room code" in error


def test_a_promotion_of_a_name_an_admin_gave_its_password_ends_its_sessions(hub, infra):
    name = hub.create_user(new_name("promo"))  # its password is an admin's (a reset): not a claim
    s = hub.session(name)
    token = hub.api("POST", f"/users/{name}/tokens", json={"note": "a script"}).json()["token"]
    assert hub.api("POST", "/groups/instructors/users", json={"users": [name]}).status_code == 200
    assert me(hub, s) is None
    assert requests.get(f"{hub.url}hub/api/user", headers={"Authorization": f"token {token}"},
                        verify=hub.ca).status_code == 403
    assert hub.session(name).get(f"{hub.url}hub/api/user").json()["name"] == name  # its password still opens it
    other = hub.create_user(new_name("promo"))
    t = hub.session(other)
    assert hub.api("PATCH", f"/users/{other}", json={"admin": True}).status_code == 200
    assert me(hub, t) is None and model(hub, other)["admin"] is True


def test_a_deleted_users_name_is_not_claimed_again_while_the_home_is_kept(hub, infra):
    name = new_name("gone")
    assert try_login(hub, name, "attendee-password", hub.password)[0]
    assert hub.api("DELETE", f"/users/{name}").status_code == 204
    ok, error, _ = try_login(hub, name, "newcomers-password", hub.password)
    assert not ok and "not available" in error
    ok, error, _ = try_login(hub, name, "attendee-password")
    assert not ok and REFUSED in error
    assert model(hub, name) is None  # no account came back
    # once the home is gone, an admin frees the name (what `stackhub users delete --purge` does)
    assert hub.api("POST", f"/stackhub/users/{name}/release").json()["released"] is True
    assert try_login(hub, name, "newcomers-password", hub.password)[0]


def test_a_request_body_over_the_limit_is_refused_before_the_login(hub, infra):
    s = browser(hub)
    s.get(f"{hub.url}hub/login")
    name = new_name("big")
    try:
        r = s.post(f"{hub.url}hub/login", data={"username": name, "password": "x" * (2 * 2**20), "otp": hub.password,
                                                 "password2": "x", "_xsrf": s.cookies.get("_xsrf")}, timeout=30)
        status = r.status_code
    except requests.ConnectionError:  # the hub closed the connection: refused too
        status = None
    assert status != 200 and status != 302
    assert model(hub, name) is None
    assert hub.api("GET", "/").status_code == 200  # the hub still answers


def test_a_users_servers_together_stay_within_the_per_user_total(hub, infra, user, stack_tags):
    """hub.namedServers.totalCpu 4 / totalMemory 8G: two medium servers (2 cores, 4G each) fill it."""
    name = user("total")
    tag = stack_tags[0]
    hub.spawn(name, {"image_tag": tag, "size": "medium"})
    hub.spawn(name, {"image_tag": tag, "size": "medium"}, server="second")
    before = {c.name for c in hub.client.containers.list(all=True)}
    r = hub.api("POST", f"/users/{name}/servers/third", json={"image_tag": tag, "size": "small"})
    if r.status_code in (201, 202):  # the refusal may come from the spawn in the background
        deadline = time.monotonic() + 60
        while model(hub, name)["servers"].get("third", {}).get("pending"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    else:
        assert r.status_code == 400, r.text
        assert "hub.namedServers.totalCpu is 4" in r.json()["message"], r.text
    assert "third" not in model(hub, name)["servers"]
    assert {c.name for c in hub.client.containers.list(all=True)} == before  # no container was made
    hub.stop(name, "second")
    hub.spawn(name, {"image_tag": tag, "size": "small"}, server="third")  # room again
    hub.stop(name, "third")
    hub.stop(name)
