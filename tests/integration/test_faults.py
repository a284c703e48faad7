"""Faults against the real engine: the hub SIGKILLed in the middle of a burst of spawns, the proxy
restarted alone, a stack image removed while a server of it runs.

Each test measures its recovery time and prints it (``-s``); bench/RESULTS-faults.md records them.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

from .hubfixture import OWN, TEST_PREFIX, home_volume_name

GRACE = 20  # hub.orphanGraceSeconds of the test deployment (hubfixture.TEST_CONFIG)


def reachable(hub, name, server="") -> bool:
    """The user's server answers through the proxy (its API, with the admin token)."""
    path = f"user/{name}/{server + '/' if server else ''}api"
    try:
        r = requests.get(f"{hub.origin(name)}{path}", headers={"Authorization": f"token {hub.token}"}, verify=hub.ca,
                         timeout=5, allow_redirects=False)
    except requests.RequestException:
        return False
    return r.status_code == 200


def until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.25)
    return result


def server_containers(hub) -> dict[tuple[str, str], str]:
    out = {}
    for c in hub.client.containers.list(all=True, filters={"label": [f"stackhub.deployment={TEST_PREFIX}",
                                                                     "stackhub.role=server"]}):
        out[(c.labels["stackhub.user"], c.labels.get("stackhub.server", ""))] = c.status
    return out


def hub_answers(hub) -> bool:
    try:
        return hub.api("GET", "/", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def test_hub_killed_mid_burst_comes_back_adopts_or_cleans_and_spawns_work_first_time(hub, user):
    steady = user("kill")
    hub.spawn(steady)
    burst = [user("kill") for _ in range(5)]

    def post(name):
        try:
            hub.api("POST", f"/users/{name}/server", json={}, timeout=60)
        except requests.RequestException:
            pass  # the hub died under it: expected

    for name in burst:
        threading.Thread(target=post, args=(name,), daemon=True).start()
    # kill once the first containers of the burst exist, so some spawns are half done
    until("a container of the burst", lambda: {u for u, _ in server_containers(hub)} & set(burst), 60)
    hub_container = hub.client.containers.get(OWN.hub)
    pid = hub_container.attrs["State"]["Pid"]
    assert hub_container.status == "running" and pid > 1, hub_container.attrs["State"]  # never kill(0) or init
    os.kill(pid, signal.SIGKILL)  # a crash, not `docker kill`: the restart policy applies
    killed = time.monotonic()
    until("the hub container exits", lambda: hub.client.containers.get(OWN.hub).attrs["State"]["Pid"]
          != hub_container.attrs["State"]["Pid"] or not hub_answers(hub), 30)

    # the deployment (Docker's restart policy) brings the hub back; the running server answers again
    until("the hub answers again", lambda: hub_answers(hub), 180)
    back = time.monotonic() - killed
    until(f"{steady}'s server answers through the proxy", lambda: reachable(hub, steady), 60)
    surviving = time.monotonic() - killed
    # half-started servers are adopted or cleaned up: none stays pending
    until("no server pending", lambda: all(hub.api("GET", f"/users/{u}").json().get("pending") is None
                                           for u in burst), 120)
    adopted = [u for u in burst if hub.api("GET", f"/users/{u}").json()["servers"]]
    # the next spawn of each works the first time (no 409 from a container under its name)
    t0 = time.monotonic()
    for name in burst:
        if name in adopted:
            assert reachable(hub, name) or until(f"{name} answers", lambda: reachable(hub, name), 60)
            hub.stop(name)
        r = hub.api("POST", f"/users/{name}/server", json={})
        assert r.status_code in (201, 202), f"{name}: {r.status_code} {r.text}"
    for name in burst:
        hub.wait_ready(name, timeout=120)
    first_spawns = time.monotonic() - t0
    # stop two again; then, after the grace, every server container is one the hub knows
    for name in burst[:2]:
        hub.stop(name)

    def known():
        users = hub.api("GET", "/users?state=active").json()
        active = {(u["name"], s) for u in users for s in u["servers"]}
        return set(server_containers(hub)) <= active

    until("no orphan container", known, GRACE * 3)
    print(f"\nhub SIGKILL: hub answers after {back:.1f} s, running server after {surviving:.1f} s; "
          f"{len(adopted)}/{len(burst)} half-started servers adopted; {len(burst)} spawns ready in {first_spawns:.1f} s")


def test_proxy_restarted_alone_gets_every_route_back_without_a_hub_restart(hub, user):
    name = user("px")
    hub.spawn(name)
    assert reachable(hub, name)
    hub_started = hub.client.containers.get(OWN.hub).attrs["State"]["StartedAt"]
    hub.client.containers.get(OWN.proxy).restart(timeout=2)
    t0 = time.monotonic()
    until("the user's route is back", lambda: reachable(hub, name), 60)
    took = time.monotonic() - t0
    r = requests.get(f"{hub.url}services/stackhub-sessions/api/tags", headers={"Authorization": f"token {hub.token}"},
                     verify=hub.ca, timeout=10)
    assert r.status_code == 200, r.status_code
    assert hub.client.containers.get(OWN.hub).attrs["State"]["StartedAt"] == hub_started
    assert took < 30, f"routes came back after {took:.1f} s (hub.routeCheckSeconds is 10)"
    print(f"\nproxy restart: route back {took:.1f} s after the proxy's restart")
    hub.stop(name)


def test_a_stack_image_removed_while_in_use(hub, user, stack_tags):
    """The server of a tag keeps running when its image tag is removed; the tag leaves the menu and
    a spawn of it names it. Only a throwaway tag of our own (``docker tag``) is removed."""
    tag = f"exp_gone{os.urandom(2).hex()}"
    image = hub.client.images.get(f"stackhub/lsst-stack:{stack_tags[-1]}")
    image.tag("stackhub/lsst-stack", tag)
    running, later = user("img"), user("img")
    try:
        hub.spawn(running, {"image_tag": tag})
    finally:
        hub.client.images.remove(f"stackhub/lsst-stack:{tag}")
    s = hub.session(later)
    until("the tag leaves the spawn form", lambda: tag not in s.get(f"{hub.url}hub/spawn").text, 30)
    assert reachable(hub, running)
    r = hub.api("POST", f"/users/{later}/server", json={"image_tag": tag})
    assert r.status_code == 400 and tag in r.json()["message"], r.text
    assert (later, "") not in server_containers(hub)
    hub.stop(running)


SIZES = [{"name": "tiny", "cpu": 1, "memory": "80M"}, {"name": "small", "cpu": 1, "memory": "600M"},
         {"name": "medium", "cpu": 1, "memory": "1G"}]
# the server's process first in the kernel's choice (raising one's own oom_score_adj needs no privilege;
# this shell is skipped, its command line names the pattern too), then more than the limit
HOG = ("for p in /proc/[0-9]*; do [ $p = /proc/$$ ] && continue; grep -q jupyter $p/cmdline 2>/dev/null "
       "&& echo 1000 > $p/oom_score_adj; done; python3 -c 'b = bytearray(1000 * 2**20)'")


def test_out_of_memory_at_start_and_while_running_names_the_limit_and_the_size_to_pick(hub, user):
    hub.reconfigure({"sizes": SIZES})
    try:
        name = user("oom")
        # dies at start: no spinner until the timeout, no 500; the reason and the last log lines
        t0 = time.monotonic()
        r = hub.api("POST", f"/users/{name}/server", json={"size": "tiny"}, timeout=120)
        assert r.status_code in (202, 503), r.text  # 202: it took longer than the hub's 10 s to die
        if r.status_code == 503:
            message = r.json()["message"]
            assert "ran out of memory" in message and "80M of size 'tiny'" in message and "small (600M)" in message
        until("the failed start is over", lambda: hub.api("GET", f"/users/{name}").json()["pending"] is None, 120)
        took = time.monotonic() - t0
        assert took < 60, f"a server dying at start took {took:.0f} s to be reported"
        assert hub.api("GET", f"/users/{name}").json()["servers"] == {}
        assert (name, "") not in server_containers(hub)  # read, then removed
        s = hub.session(name)
        page = s.get(f"{hub.url}hub/spawn").text
        assert "stackhub-last-exit" in page and "80M of size &#39;tiny&#39;" in page and "small (600M)" in page
        # the log's end, or that there was none (how far it got depends on the image's imports)
        assert "last log lines" in page, page[:3000]

        # killed for memory while running (the server's process is the one the kernel picks)
        hub.spawn(name, {"size": "small"})
        assert "stackhub-last-exit" not in s.get(f"{hub.url}hub/spawn").text  # a good start clears it
        c = hub.client.containers.get(OWN.server(name))
        c.exec_run(["bash", "-c", HOG], user="1000")
        t1 = time.monotonic()
        until("the hub sees the server stopped", lambda: hub.api("GET", f"/users/{name}").json()["servers"] == {}, 120)
        seen = time.monotonic() - t1
        assert (name, "") not in server_containers(hub)
        page = s.get(f"{hub.url}hub/spawn").text
        assert "ran out of memory" in page and "600M of size &#39;small&#39;" in page and "medium (1G)" in page
        hub.spawn(name, {"size": "medium"})
        print(f"\nout of memory: at start reported after {took:.1f} s; while running seen stopped after {seen:.1f} s")
        hub.stop(name)
    finally:
        hub.reconfigure()


def test_a_full_home_gives_a_clear_error_and_leaves_the_hub_and_others_alone(hub, user):
    """The home is a 30 MiB tmpfs volume of the test's own (made before the first spawn, with the
    labels the spawner gives homes), so filling it costs nothing and touches no shared disk."""
    name, other = user("full"), user("full")
    volume = home_volume_name(name)
    hub.client.volumes.create(volume, driver="local", labels={"stackhub.deployment": TEST_PREFIX,
                                                              "stackhub.role": "home", "stackhub.user": name},
                              driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=30m,uid=1000,gid=1000"})
    hub.spawn(name)
    code, out = hub.client.containers.get(OWN.server(name)).exec_run(
        ["bash", "-c", "head -c 40M /dev/zero > ~/big"], user="1000")
    assert code != 0 and b"No space left on device" in out, out
    r = requests.put(f"{hub.origin(name)}user/{name}/api/contents/note.txt", headers={"Authorization": f"token {hub.token}"},
                     verify=hub.ca, json={"type": "file", "format": "text", "content": "hello"}, timeout=30)
    assert r.status_code >= 400 and "No space left on device" in r.json()["message"], r.text
    # the hub, another user, and the full user's own restart are fine
    assert hub.api("GET", "/").status_code == 200
    hub.spawn(other)
    assert reachable(hub, other)
    hub.stop(name)
    hub.spawn(name)
    assert reachable(hub, name)
    hub.stop(name)
    hub.stop(other)
