"""Per-user caps (issue 10, container hardening): named servers per user, and sizes against the host.

The named-server cap is JupyterHub's own ``named_server_limit_per_user`` (from
``hub.namedServers.limit``); the size check runs at hub start with the host's capacity read from the
engine by the hub container itself.
"""

import json

import requests

from spawner.core.config import StackhubConfig

from .hubfixture import OWN

HUB = OWN.hub


def test_a_user_cannot_start_more_named_servers_than_the_limit_through_the_api(hub, user, stack_tags):
    name = user("capped")
    limit = StackhubConfig().hub.named_servers.limit
    assert limit > 0
    q = requests.utils.quote(name, safe="")
    token = hub.api("POST", f"/users/{q}/tokens", json={"note": "caps"}).json()["token"]
    servers = [f"s{i}" for i in range(limit)]
    try:
        for s in servers:
            hub.spawn(name, {"image_tag": stack_tags[0]}, server=s)
        # the user's own token, as an attendee's terminal would use it
        r = requests.post(f"{hub.url}hub/api/users/{q}/servers/one-more", json={}, verify=hub.ca, timeout=30,
                          headers={"Authorization": f"token {token}"})
        assert r.status_code == 400 and f"maximum of {limit} named servers" in r.json()["message"], r.text
        assert "one-more" not in hub.api("GET", f"/users/{q}").json()["servers"]
        # a stopped (not removed) named server still counts: stopping is not a way around the cap
        hub.stop(name, servers[0])
        r = hub.api("POST", f"/users/{q}/servers/one-more", json={})
        assert r.status_code == 400, r.text
    finally:
        for s in servers:
            hub.api("DELETE", f"/users/{q}/servers/{s}", json={"remove": True})


def test_a_size_larger_than_the_host_stops_the_hub_at_start_naming_it(hub):
    """jupyterhub_config.py, run in the hub container as the hub runs it, with a size of too many cores."""
    container = hub.client.containers.get(HUB)
    ncpu = hub.client.info()["NCPU"]
    config = {"sizes": [{"name": "small", "cpu": 1, "memory": "1G"}, {"name": "huge", "cpu": ncpu + 1, "memory": "1G"}]}
    code, out = container.exec_run(["sh", "-c", 'printf %s "$1" > /tmp/stackhub-too-big.yaml', "sh", json.dumps(config)])
    assert code == 0, out
    script = ("import runpy\nfrom traitlets.config import Config\n"
              "runpy.run_path('/srv/stackhub/jupyterhub_config.py', init_globals={'get_config': Config})\n")
    try:
        code, out = container.exec_run(["python", "-c", script], environment={"STACKHUB_CONFIG": "/tmp/stackhub-too-big.yaml"})
    finally:
        container.exec_run(["rm", "-f", "/tmp/stackhub-too-big.yaml"])
    text = out.decode()
    assert code == 1, text
    assert f"size 'huge' (cpu {ncpu + 1} > {ncpu} cores)" in text and f"{ncpu} cores and" in text, text


def test_a_default_size_the_host_cannot_give_is_neither_offered_nor_started(hub, user):
    """The embedded sizes are small (1 core), medium (2), large (4 cores): large fits only a 4-core host."""
    name = user("sizes")
    fits = hub.client.info()["NCPU"] >= 4
    html = hub.session(name).get(f"{hub.url}hub/spawn").text
    assert ('value="large"' in html) is fits and 'value="small"' in html
    r = hub.api("POST", f"/users/{requests.utils.quote(name, safe='')}/server", json={"size": "large"})
    if fits:
        assert r.status_code in (201, 202), r.text
        hub.wait_ready(name)
        hub.stop(name)
    else:
        assert r.status_code == 400 and "unknown size 'large'; allowed: small, medium" in r.json()["message"], r.text
        assert hub.api("GET", f"/users/{name}").json()["servers"] == {}
