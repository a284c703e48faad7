"""The Swarm backend, live (issue 12): hub and proxy as Swarm services, users' servers as services.

On the shared test engine: ``docker swarm init`` if it is not a swarm manager yet, a deployment of
its own (prefix ``stackhub-swarmtest``, ports 12443/12080, overlay networks, volumes), spawns
through the hub's REST API with a tag, stop, and a course publish that reaches a Swarm user. Every
object it made is removed at the end. It leaves swarm mode again only if it entered it and no other
container runs on a user-defined network: a ``swarm leave`` makes the engine's DNS forget the names
on those networks (shared/NOTES.md), and the deployments beside it must keep working.
"""

from __future__ import annotations

import time
import uuid

import docker
import pytest
import requests
import yaml

from spawner.core.config import load_config
from spawner.core.names import home_volume_name
from spawner.deploy.single_host import HostPaths
from spawner.deploy.swarm import SwarmDeployment

from .hubfixture import ARTIFACTS, Hub, checkout_hub_image, seed_data
from .test_courses import cli, git, make_instructor, nb, token_for

PREFIX = "stackhub-swarmtest"


def swarm_config(hub_image: str) -> dict:
    return {
        "hub": {"prefix": PREFIX, "httpsPort": 12443, "httpPort": 12080, "network": f"{PREFIX}-users",
                "apiNetwork": f"{PREFIX}-internal", "stateVolume": f"{PREFIX}-hub-state", "image": hub_image,
                "adminUsers": ["admin"]},
        "volumes": {"data": [{"source": f"{PREFIX}-data", "target": "/data"}], "homeVolume": f"{PREFIX}-home-{{user}}",
                    "homeBudget": None},
        "courses": {"volume": f"{PREFIX}-courses"},
        "culler": {"enabled": False},
        "stack": {"catalogTtl": 2},
        "spawner": {"backend": {"type": "swarm", "reservation": 0.1}},
    }


def swarm_state(client) -> dict:
    return client.info().get("Swarm") or {}


def others_on_user_networks(client) -> list[str]:
    """Running containers, not Swarm tasks, on user-defined networks (a leave would hurt their DNS)."""
    out = []
    for c in client.containers.list():
        if "com.docker.swarm.task.id" in c.labels:
            continue
        nets = set((c.attrs.get("NetworkSettings") or {}).get("Networks") or {})
        if nets - {"bridge", "host", "none"}:
            out.append(c.name)
    return out


def remove_everything(client):
    """Every object of this test's deployment: services, volumes, networks."""
    label = f"stackhub.deployment={PREFIX}"
    for s in client.services.list(filters={"label": label}):
        s.remove()
    deadline = time.monotonic() + 60
    while client.api.containers(all=True, filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.5)
    for v in client.volumes.list(filters={"label": label}) + [
            v for v in client.volumes.list() if v.name.startswith(f"{PREFIX}-")]:
        try:
            v.remove(force=True)
        except docker.errors.NotFound:
            pass
    for n in client.networks.list(names=[f"{PREFIX}-users", f"{PREFIX}-internal"]):
        if n.name.startswith(PREFIX):
            try:
                n.remove()
            except docker.errors.APIError:  # the engine lets go of an overlay a moment after its last task
                time.sleep(2)
                n.remove()


@pytest.fixture(scope="module")
def swarm(docker_client, tmp_path_factory):
    """A Swarm manager: the engine itself (``docker swarm init`` if needed); says whether it was made here."""
    state = swarm_state(docker_client)
    made = False
    if state.get("LocalNodeState") != "active":
        docker_client.swarm.init(advertise_addr="127.0.0.1")
        made = True
    elif not state.get("ControlAvailable"):
        pytest.fail("the test engine is in a swarm but not a manager; the Swarm test needs a manager")
    yield made
    if made:
        others = others_on_user_networks(docker_client)
        if others:
            print(f"\nswarm test: keeping swarm mode ({', '.join(sorted(others)[:5])} run on user-defined "
                  "networks; a leave would make the engine's DNS forget their names)")
        else:
            docker_client.swarm.leave(force=True)


@pytest.fixture(scope="module")
def shub(swarm, docker_client, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swarm")
    remove_everything(docker_client)  # an aborted run's leftovers
    config_file = tmp / "stackhub.yaml"
    config_file.write_text(yaml.safe_dump(swarm_config(checkout_hub_image(docker_client))))
    cfg = load_config(config_file)
    paths = HostPaths(tmp / "var")
    dep = SwarmDeployment(client=docker_client, cfg=cfg, paths=paths, config_file=config_file, log=lambda m: None)
    seed_data(docker_client, f"{PREFIX}-data")
    try:
        tls = dep.up()
        secrets = paths.secrets
        yield Hub(url=f"https://localhost:{cfg.hub.https_port}/", http_url=f"http://localhost:{cfg.hub.http_port}/",
                  ca=str(tls.ca), token=(secrets / "admin-token").read_text().strip(),
                  password=(secrets / "shared-password").read_text().strip(),
                  admin_password=(secrets / "admin-password").read_text().strip(), deployment=dep,
                  config_file=config_file, tls=tls, client=docker_client)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        for name in (dep.own.hub, dep.own.proxy):
            for s in docker_client.services.list(filters={"name": name}):
                (ARTIFACTS / f"swarm-{name}.log").write_bytes(b"".join(s.logs(stdout=True, stderr=True, tail=400)))
        dep.down()
        remove_everything(docker_client)


@pytest.fixture
def swarm_user(shub):
    def make(base="sw"):
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        shub.create_user(name)
        return name
    return make


def task_container(client, service: str):
    """The running container of a service's one task (this engine is the swarm's only node)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no running task container of {service}")


def sh(shub, name, cmd):
    c = task_container(shub.client, shub.deployment.own.server(name))
    code, out = c.exec_run(["bash", "-lc", cmd], user="1000")
    return code, out.decode()


def test_hub_and_proxy_run_as_swarm_services(shub, docker_client):
    own = shub.deployment.own
    for name in (own.hub, own.proxy):
        (service,) = [s for s in docker_client.services.list(filters={"name": name}) if s.name == name]
        assert service.attrs["Spec"]["Labels"]["stackhub.deployment"] == PREFIX
        task = service.attrs["Spec"]["TaskTemplate"]
        assert task["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "10M", "max-file": "3"}}, name
        assert task["Resources"]["Limits"]["MemoryBytes"] == (2 if name == own.hub else 1) * 2**30, name
    r = requests.get(f"{shub.url}hub/api/", verify=shub.ca, timeout=30)
    assert r.status_code == 200 and "version" in r.json()
    r = requests.get(shub.http_url, allow_redirects=False, timeout=30)  # plain HTTP only redirects
    assert r.status_code in (301, 302, 307, 308) and r.headers["Location"].startswith("https://")


def test_spawn_with_a_tag_runs_that_image_with_home_and_data_and_answers_through_the_proxy(shub, swarm_user, stack_tags):
    name, tag = swarm_user(), stack_tags[1]
    shub.spawn(name, {"image_tag": tag, "size": "small"}, timeout=180)
    service = shub.client.services.get(shub.deployment.own.server(name))
    spec = service.attrs["Spec"]
    assert spec["Labels"]["stackhub.user"] == name and spec["Labels"]["stackhub.tag"] == tag
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"].startswith(f"stackhub/lsst-stack:{tag}")
    assert spec["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"] == 10**9
    c = task_container(shub.client, service.name)
    # the server's log is bounded on Swarm too: the task's container carries the service's log driver
    assert c.attrs["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10M", "max-file": "3"}}
    home = home_volume_name(name, f"{PREFIX}-home-{{user}}")
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/home"]["Name"] == home and mounts["/home"]["RW"] is True
    assert mounts["/data"]["Name"] == f"{PREFIX}-data" and mounts["/data"]["RW"] is False
    code, out = sh(shub, name, "id -u; echo $HOME; cat /data/README.txt; echo kept > ~/kept.txt && echo wrote;"
                               " touch /data/x 2>/dev/null || echo data-read-only; grep CapEff /proc/self/status")
    assert code == 0, out
    assert out.split()[:2] == ["1000", f"/home/{name}"] and "tutorial data" in out and "wrote" in out
    assert "data-read-only" in out and "0000000000000000" in out
    # the lab answers through the proxy (TLS, the hub's route to the service's name on the overlay)
    r = requests.get(f"{shub.origin(name)}user/{name}/api/status", headers={"Authorization": f"token {shub.token}"},
                     verify=shub.ca, timeout=30)
    assert r.status_code == 200, r.text

    # stop removes the service and keeps the home; the next start (another tag) finds the file
    shub.stop(name)
    deadline = time.monotonic() + 30
    while shub.client.services.list(filters={"name": service.name}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [s for s in shub.client.services.list(filters={"name": service.name}) if s.name == service.name]
    assert shub.client.volumes.get(home).attrs["Labels"]["stackhub.user"] == name
    shub.spawn(name, {"image_tag": stack_tags[0]}, timeout=180)
    code, out = sh(shub, name, "cat ~/kept.txt")
    assert (code, out.strip()) == (0, "kept")
    shub.stop(name)


def test_a_bad_tag_is_refused_and_no_service_is_made(shub, swarm_user):
    name = swarm_user()
    r = shub.api("POST", f"/users/{name}/server", json={"image_tag": "w_1999_01"})
    assert r.status_code == 400 and "allowed" in r.json()["message"]
    assert not shub.client.services.list(filters={"name": shub.deployment.own.server(name)})


def test_a_course_publish_reaches_a_swarm_user(shub, swarm_user, tmp_path):
    repo = tmp_path / "course"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "A.ipynb").write_text(nb("swarm v1"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "v1")
    instructor, attendee = swarm_user("inst"), swarm_user("att")
    make_instructor(shub, instructor)
    token = token_for(shub, instructor)
    shub.spawn(attendee, timeout=180)  # running before the course exists

    course = f"sw-{uuid.uuid4().hex[:6]}"
    deadline = time.monotonic() + 60
    while True:  # the hub answers before its course service is routed
        out = cli(shub, "publish", course, str(repo), "--ref", "main", token=token)
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode == 0, out.stderr
    r = requests.post(f"{shub.url}services/stackhub-courses/api/sync", json={"users": [attendee], "courses": [course]},
                      headers={"Authorization": f"token {token}"}, verify=shub.ca, timeout=180)
    assert r.status_code == 200 and r.json()["synced"] == 1, r.text
    code, text = sh(shub, attendee, f"cat ~/notebooks/{course}/A.ipynb")
    assert code == 0 and text == nb("swarm v1")
    shub.stop(attendee)
