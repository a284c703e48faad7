"""The load tool (bench/load) walks through the test deployment as a browser would, and sees failures.

A smoke test, N=2, without timing assertions (the targets live in bench/RESULTS-load.md): every
phase is recorded, the kernel ran the LSST cell through the proxy's websocket, the result is plain
JSON; and a spawn with a tag that does not exist is reported as a failure with its reason. With a
pre-warm, the attendees walk from the login straight to their running lab; one whose server the
pre-warm did not start is a failure, not a quiet spawn.
"""

from __future__ import annotations

import json
import uuid

import docker

from bench.load.__main__ import run_round
from bench.load.attendee import Endpoint
from bench.load.scenario import Scenario
from bench.load.stats import PHASES
from bench.load.targets import Prewarm, Target

from .conftest import TEST_USERS
from .hubfixture import OWN, remove_user_objects


class TestHubTarget(Prewarm, Target):
    """The session's test deployment, as the load tool's stackhub target."""

    __test__ = False
    name = "stackhub"
    size = "small"

    def __init__(self, hub):
        self.hub, self.token = hub, hub.token
        self.endpoint = Endpoint(name="stackhub", url=hub.url, ca=hub.ca, tag_field="image_tag",
                                 login_extra={"otp": hub.password}, form_extra={"size": "small"},
                                 server_origin=hub.origin)

    def hub_containers(self):
        return {"hub": OWN.hub, "proxy": OWN.proxy}

    def server_container(self, user):
        return OWN.server(user)

    def _remove_homes(self, users):
        remove_user_objects(self.hub.client, set(users))


def _round(hub, scenario, monkeypatch, target=None):
    run_id = uuid.uuid4().hex[:4]
    # the names this round makes are the test session's to clean up, whatever happens
    import bench.load.__main__ as driver

    made = []
    real = driver.username

    def tracked(*a):
        made.append(real(*a))
        TEST_USERS.add(made[-1])
        return made[-1]

    monkeypatch.setattr(driver, "username", tracked)
    return run_round(docker.from_env(), target or TestHubTarget(hub), scenario, 1, run_id)


def test_two_attendees_walk_to_the_cell_output(hub, stack_tags, monkeypatch):
    scenario = Scenario(users=2, targets=("stackhub",), tag=stack_tags[0], idle=1, timeout=300)
    s = _round(hub, scenario, monkeypatch)
    assert s["failed"] == 0, s["failures"]
    assert s["ready_count"] == 2 and s["all_ready"] is not None and s["all_done"] is not None
    for phase in PHASES:
        assert s["phases"][phase]["n"] == 2, phase
    assert s["idle_memory_mib"]["n"] == 2 and s["idle_memory_mib"]["p50"] > 10
    assert s["hub"]["cpu_seconds"] >= 0 and s["hub"]["rss_peak_mib"] > 10
    assert s["latency"]["hub_api"]["n"] > 0
    json.dumps(s)
    for a in s["attendees"]:  # the servers are gone again
        assert hub.api("GET", f"/users/{a['user']}").status_code == 404


def test_a_spawn_that_fails_is_reported_with_its_reason(hub, monkeypatch):
    scenario = Scenario(users=1, targets=("stackhub",), tag="w_1999_01", idle=0, timeout=120)
    s = _round(hub, scenario, monkeypatch)
    assert s["failed"] == 1
    failure = s["failures"][0]
    assert failure["phase"] == "spawn"
    assert "w_1999_01" in failure["reason"], failure
    assert s["all_ready"] is None and s["ready_curve"] == []


def test_prewarmed_attendees_walk_from_the_login_to_their_running_lab(hub, stack_tags, monkeypatch):
    scenario = Scenario(users=2, targets=("stackhub",), tag=stack_tags[0], idle=0, timeout=300, prewarm=True)
    s = _round(hub, scenario, monkeypatch)
    assert s["failed"] == 0, s["failures"]
    assert s["prewarm"]["counts"] == {"ready": 2} and s["prewarm"]["seconds"] > 0
    assert s["phases"]["form"]["n"] == 0 and s["phases"]["spawn"]["n"] == 0  # nothing spawned on arrival
    for phase in ("login", "lab", "kernel_start", "cell", "stop"):
        assert s["phases"][phase]["n"] == 2, phase
    assert s["spans"]["ready"]["n"] == 2
    assert hub.api("GET", f"/groups/{Prewarm.PREWARM_GROUP}").status_code == 404  # the round's group is gone


def test_an_attendee_the_prewarm_missed_is_a_failure(hub, stack_tags, monkeypatch):
    target = TestHubTarget(hub)

    def no_servers(users, *_):  # the users exist, as after a pre-warm that failed for them
        for u in users:  # unclaimed, as a pre-warm leaves them (hub.create_user would give a password)
            assert hub.api("POST", f"/users/{u}").status_code == 201
        return {"seconds": 0.0, "counts": {"failed": len(users)}, "concurrency": 1}

    monkeypatch.setattr(target, "prewarm", no_servers)
    scenario = Scenario(users=1, targets=("stackhub",), tag=stack_tags[0], idle=0, timeout=120, prewarm=True)
    s = _round(hub, scenario, monkeypatch, target)
    assert s["failed"] == 1
    failure = s["failures"][0]
    assert failure["phase"] == "lab" and "not their server" in failure["reason"], failure
