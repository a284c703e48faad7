"""The single-host hub, end to end through its public HTTPS endpoint and REST API (issue 3)."""

import re
import time
import ssl
import socket
import subprocess

import docker
import pytest
import requests

from .hubfixture import OWN, container_name, home_volume_name

from .conftest import TEST_USERS


def container_of(hub, name, server=""):
    return hub.client.containers.get(container_name(name, server))


def gone(hub, name, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            hub.client.containers.get(name)
        except docker.errors.NotFound:
            return True
        time.sleep(0.3)
    return False


def run_in(container, cmd):
    code, out = container.exec_run(["bash", "-c", cmd], user="1000")
    return code, out.decode()


def test_home_survives_a_tag_change_and_data_is_read_only(hub, user, stack_tags):
    tag_a, tag_b = stack_tags[0], stack_tags[1]
    name = user("tag")
    hub.spawn(name, {"image_tag": tag_a, "size": "small"})
    c = container_of(hub, name)
    assert c.image.tags and f"stackhub/lsst-stack:{tag_a}" in c.image.tags
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/home"]["RW"] is True and mounts["/home"]["Name"] == home_volume_name(name)
    assert mounts["/data"]["RW"] is False
    code, out = run_in(c, f"id -u; echo hello > /home/{name}/kept.txt && cat /data/README.txt; touch /data/x 2>&1")  # one stream: in order
    assert out.splitlines()[0] == "1000"
    assert "tutorial data" in out and code != 0  # /data is read-only
    code, out = run_in(c, f"stat -c %u /home/{name} /home")
    assert out.split() == ["1000", "1000"]  # owned by the user from the first start
    # the server answers through the proxy
    r = requests.get(f"{hub.origin(name)}user/{name}/api/status", headers={"Authorization": f"token {hub.token}"},
                     verify=hub.ca, timeout=30)
    assert r.status_code == 200, r.text
    # a tutorial's lab asks no one about news and fetches nothing from outside
    auth = {"Authorization": f"token {hub.token}"}
    settings = requests.get(f"{hub.origin(name)}user/{name}/lab/api/settings/@jupyterlab/apputils-extension:notification",
                            headers=auth, verify=hub.ca, timeout=30).json()
    props = settings["schema"]["properties"]
    assert props["fetchNews"]["default"] == "false" and props["checkForUpdates"]["default"] is False

    hub.stop(name)
    assert gone(hub, container_name(name)), "container kept after stop"  # so a new tag takes effect
    hub.spawn(name, {"image_tag": tag_b})
    c = container_of(hub, name)
    assert f"stackhub/lsst-stack:{tag_b}" in c.image.tags
    code, out = run_in(c, f"cat /home/{name}/kept.txt")
    assert code == 0 and out.strip() == "hello"
    hub.stop(name)


@pytest.mark.parametrize("options,needle", [
    ({"image_tag": "w_1999_01"}, "allowed"),
    ({"size": "enormous"}, "allowed: small, medium"),  # large too where the host has 4+ cores
    ({"image": "debian:latest"}, "allowed keys"),
])
def test_bad_options_are_refused_and_create_nothing(hub, user, options, needle):
    name = user("bad")
    before = {c.name for c in hub.client.containers.list(all=True)}
    volumes_before = {v.name for v in hub.client.volumes.list()}
    q = requests.utils.quote(name, safe="")
    r = hub.api("POST", f"/users/{q}/server", json=options)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert {c.name for c in hub.client.containers.list(all=True)} == before
    assert {v.name for v in hub.client.volumes.list()} == volumes_before
    assert hub.api("GET", f"/users/{q}").json()["servers"] == {}


@pytest.mark.parametrize("body, needle", [
    ({"image_tag": 43}, "image_tag"),             # valid JSON, wrong type
    ({"image_tag": ["w_2026_43"]}, "image_tag"),
    ({"size": {"cpu": 64}}, "size"),
])
def test_wrongly_typed_user_options_are_a_400_naming_the_key(hub, user, body, needle):
    """JSON that parses but is not what stackhub takes: stackhub's own 400, and nothing created."""
    name = user("json")
    before = {c.name for c in hub.client.containers.list(all=True)}
    r = hub.api("POST", f"/users/{name}/server", json=body)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert needle in message and "allowed" in message, message
    assert {c.name for c in hub.client.containers.list(all=True)} == before


def test_a_deleted_image_is_refused_with_400(hub, user, stack_tags):
    """The catalog still lists the tag (its cache is fresh) but the image is gone: the spawner's
    own check at start names the missing image."""
    name = user("gone")
    s = hub.session(name)
    hub.client.images.get(f"stackhub/lsst-stack:{stack_tags[-1]}").tag("stackhub/lsst-stack", "exp_deleted")
    try:
        # the first form that offers the tag is the one whose catalog load saw it: fresh for 2 s
        deadline = time.monotonic() + 30
        while "exp_deleted" not in s.get(f"{hub.url}hub/spawn").text:
            assert time.monotonic() < deadline, "the new tag never reached the spawn form"
    finally:
        hub.client.images.remove("stackhub/lsst-stack:exp_deleted")
    r = hub.api("POST", f"/users/{name}/server", json={"image_tag": "exp_deleted"})
    assert r.status_code == 400, r.text
    assert "the image of image_tag 'exp_deleted' is gone" in r.json()["message"], r.json()["message"]
    assert not hub.client.containers.list(all=True, filters={"name": container_name(name)})


def test_unusual_usernames_get_distinct_working_servers(hub, stack_tags):
    """Names the tutorial login accepts whose escaped forms could meet (Unicode, '+' and capitals,
    which OAuth providers may send, are pinned by tests/unit/test_names.py)."""
    names = ["dot.ted", "dot-2eted", "under_score", "jurgen", "x-2d-2db"]
    TEST_USERS.update(names)
    for n in names:
        hub.create_user(n)
    for n in names:
        hub.spawn(n, {"image_tag": stack_tags[0]})
    containers = {container_of(hub, n).name for n in names}
    volumes = {home_volume_name(n) for n in names}
    assert len(containers) == len(names) and len(volumes) == len(names)
    for n in names:
        code, out = run_in(container_of(hub, n), 'echo "$HOME"; touch "$HOME/ok"')
        assert code == 0 and out.strip() == f"/home/{n}"
        hub.stop(n)


def test_named_servers_share_the_home(hub, user, stack_tags):
    name = user("named")
    hub.spawn(name, {"image_tag": stack_tags[0]})
    hub.spawn(name, {"image_tag": stack_tags[1]}, server="second")
    run_in(container_of(hub, name), f"echo shared > /home/{name}/both.txt")
    code, out = run_in(container_of(hub, name, "second"), f"cat /home/{name}/both.txt")
    assert out.strip() == "shared"
    hub.stop(name, "second")
    hub.stop(name)


def test_hub_restart_keeps_running_servers_reachable(hub, user, stack_tags):
    name = user("restart")
    hub.spawn(name, {"image_tag": stack_tags[0]})
    hub.client.containers.get(OWN.hub).restart()
    hub.deployment.wait_ready(hub.tls)
    r = requests.get(f"{hub.origin(name)}user/{name}/api/status", headers={"Authorization": f"token {hub.token}"},
                     verify=hub.ca, timeout=30)
    assert r.status_code == 200
    model = hub.api("GET", f"/users/{name}").json()
    assert model["servers"][""]["ready"]
    hub.stop(name)


def test_http_redirects_to_https_and_the_certificate_verifies(hub):
    r = requests.get(f"{hub.http_url}hub/login", allow_redirects=False, timeout=10)
    assert r.status_code in (301, 302, 307, 308)
    port = hub.deployment.cfg.hub.https_port
    assert r.headers["Location"].startswith(f"https://localhost:{port}/")
    ctx = ssl.create_default_context(cafile=hub.ca)
    with socket.create_connection(("localhost", port)) as sock, ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        assert tls.getpeercert()["subject"]
    r = requests.get(f"{hub.url}hub/login", verify=hub.ca, timeout=10)
    assert "Strict-Transport-Security" in r.headers
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{hub.url}hub/login", timeout=10, verify=True)  # not trusted without the CA


def test_spawn_form_groups_tags_by_class(hub, user, stack_tags):
    name = user("form")
    s = hub.session(name)
    html = s.get(f"{hub.url}hub/spawn").text
    assert 'name="image_tag" value="recommended" checked' in html
    assert 'data-class="weekly"' in html and 'data-class="release"' in html
    for tag in stack_tags:
        assert f"({tag})" in html
    assert re.search(r'name="size" value="small"\s+checked', html)


def test_form_post_starts_the_chosen_tag(hub, user, stack_tags):
    name = user("post")
    s = hub.session(name)
    r = s.post(f"{hub.url}hub/spawn", data={"image_tag": stack_tags[1], "size": "small", "_xsrf": s.cookies.get("_xsrf")})
    assert r.status_code == 200
    hub.wait_ready(name)
    assert f"stackhub/lsst-stack:{stack_tags[1]}" in container_of(hub, name).image.tags
    hub.stop(name)


def test_a_config_with_an_unknown_key_stops_the_hub_naming_key_and_file(tmp_path, hub):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub:\n  httpsPrt: 1\n")
    bad.chmod(0o644)
    out = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{bad}:/cfg/stackhub.yaml:ro", "-e", "STACKHUB_CONFIG=/cfg/stackhub.yaml",
         hub.deployment.cfg.hub.image, "jupyterhub", "-f", "/srv/stackhub/jupyterhub_config.py"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "hub.httpsPrt" in out.stderr and "/cfg/stackhub.yaml" in out.stderr


def test_spawn_progress_names_image_volume_and_container(hub, user, stack_tags):
    """The spawn page's event stream (the same one the browser reads) tells what is happening."""
    import json
    import threading

    name = user("progress")
    # the POST answers only when the spawn is done (or after 10 s): listen while it runs
    post = threading.Thread(target=hub.api, args=("POST", f"/users/{name}/server"),
                            kwargs={"json": {"image_tag": stack_tags[0]}})
    post.start()
    events = []
    deadline = time.monotonic() + 120
    while not events:
        assert time.monotonic() < deadline, "no progress stream"
        with hub.api("GET", f"/users/{name}/server/progress", stream=True, timeout=30) as stream:
            if stream.status_code != 200:
                time.sleep(0.2)
                continue
            for line in stream.iter_lines(decode_unicode=True):
                assert time.monotonic() < deadline, f"the progress stream never ended: {events}"
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    events.append(event.get("message", ""))
                    if event.get("ready") or event.get("failed"):
                        break
    post.join()
    text = "\n".join(events)
    assert "Image stackhub/lsst-stack:" in text, text
    assert "home volume" in text and "Starting container" in text
    hub.wait_ready(name)
    hub.stop(name)


def test_up_prints_the_login_block_token_and_down_keeps_homes(hub, user, stack_tags):
    """`make up` / `make token` / `make down` as a newcomer runs them (the CLI behind the targets)."""
    import os
    import sys

    name = user("updown")
    hub.spawn(name, {"image_tag": stack_tags[0]})
    env = {**os.environ, "STACKHUB_STATE": str(hub.deployment.paths.root), "STACKHUB_CONFIG": str(hub.config_file)}
    cli = [sys.executable, "-m", "spawner.cli.main"]
    up = subprocess.run(cli + ["up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    block = dict(line.split(": ", 1) for line in up.stdout.splitlines() if re.match(r"^[a-z-]+: ", line))
    assert block["url"] == hub.url
    assert block["room-code"] == hub.password and block["ca"] == hub.ca
    assert requests.get(block["url"] + "hub/api/", verify=block["ca"], timeout=10).status_code == 200
    token = subprocess.run(cli + ["token"], env=env, capture_output=True, text=True).stdout.splitlines()[-1]
    assert token == hub.token
    assert hub.api("GET", f"/users/{name}").json()["servers"][""]["ready"]  # up again kept the server

    down = subprocess.run(cli + ["down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert gone(hub, OWN.hub) and gone(hub, container_name(name))
    hub.client.volumes.get(home_volume_name(name))  # the home is kept
    hub.client.volumes.get(hub.deployment.cfg.hub.state_volume)  # and the hub's state
    hub.deployment.up()
    model = hub.api("GET", f"/users/{name}").json()
    assert model["name"] == name and not model["servers"]  # the user is remembered, the server stopped
