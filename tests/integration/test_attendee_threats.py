"""The attendee who wants in: each attempt made with only the room code and a shell in one's own
server, against the real hub. Each must fail, and the deployment must not change.

docs/security.md lists these attempts with their results. Network paths are tried in
test_isolation.py, course-service paths in test_courses.py.
"""

from __future__ import annotations

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


def try_login(hub, username, password, room_code=""):
    """POST the login form as a browser would; return (logged in?, the page's error text)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = hub.ca
    s.get(f"{hub.url}hub/login")
    r = s.post(f"{hub.url}hub/login", data={"username": username, "password": password, "otp": room_code,
                                             "_xsrf": s.cookies.get("_xsrf")}, allow_redirects=True)
    logged_in = "/hub/login" not in r.url and r.status_code == 200
    error = re.search(r'class="login_error">([^<]*)<', r.text)
    return logged_in, (error.group(1) if error else ""), s


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
        assert not ok and f"Wrong password for {victim}" in error
        assert s.get(f"{hub.url}hub/api/user").status_code == 403
    for spelling in (victim.upper(), f"  {victim} "):
        ok, error, _ = try_login(hub, spelling, "attackers-pw", hub.password)
        assert not ok and "Wrong password" in error, spelling
    assert try_login(hub, victim, "victims-own-pw")[0]  # the owner still gets in


def test_room_code_does_not_open_an_instructor_or_admin(hub, infra):
    teacher = new_name("teach")
    hub.create_user(teacher)
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
