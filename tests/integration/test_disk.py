"""Home disk budget against the real engine: stackhub-diskwatch warns at 90 %, stops a server over
the budget (the spawn page says why), lets the user start again to clean up, and leaves everyone
else alone. The hub runs this module with a 64 MiB budget checked every 2 seconds."""

from __future__ import annotations

import json
import time

import pytest

from .hubfixture import OWN, container_name

from .hubfixture import TEST_CONFIG

BUDGET_MB = 64
CONFIG = {"volumes": {**TEST_CONFIG["volumes"], "homeBudget": f"{BUDGET_MB}M", "homeBudgetCheckSeconds": 2,
                      "homeBudgetGraceSeconds": 120}}


def poll(what, check, timeout=60.0, every=0.5):
    """Call ``check`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {result!r})")
        time.sleep(every)


def sh(hub, name, cmd):
    """Run ``cmd`` as the user (uid 1000) in their server; (exit code, output)."""
    code, out = hub.client.containers.get(container_name(name)).exec_run(["bash", "-c", cmd], user="1000")
    return code, out.decode(errors="replace")


def state(hub) -> dict:
    code, out = hub.client.containers.get(OWN.hub).exec_run(
        ["cat", "/srv/stackhub/state/disk-budget.json"])
    return json.loads(out) if code == 0 else {}


def server_state(hub, name):
    return hub.api("GET", f"/users/{name}").json().get("servers", {}).get("")


@pytest.fixture(scope="module")
def budget_hub(hub):
    try:
        hub.reconfigure(CONFIG)
        yield hub
    finally:
        hub.dump_logs("disk")
        hub.reconfigure()


def test_warn_at_90_percent_then_stop_over_budget_and_let_the_user_clean_up(budget_hub, user):
    hub = budget_hub
    filler, neighbour = user("fill"), user("calm")
    hub.spawn(filler)
    hub.spawn(neighbour)
    code, out = sh(hub, filler, "echo hello > ~/keep.txt && du -sb ~ | cut -f1")
    assert code == 0 and int(out) < 4 * 2**20, out  # the budget below assumes a near-empty home

    # past 90 %: a warning file appears in the home, written as the user
    assert sh(hub, filler, f"head -c {BUDGET_MB * 92 // 100}M /dev/zero > ~/big1")[0] == 0
    warning = poll("the warning file", lambda: (lambda r: r[0] == 0 and r[1])(
        sh(hub, filler, "stat -c %u ~/DISK-QUOTA-WARNING.txt && cat ~/DISK-QUOTA-WARNING.txt")), timeout=30)
    owner, text = warning.split("\n", 1)
    assert owner == "1000", "the warning must be written as the user, never as root"
    assert f"of its {BUDGET_MB} MiB disk budget" in text and "stopped" in text
    assert server_state(hub, filler)["ready"], "a warning must not stop the server"
    assert sh(hub, neighbour, "test -e ~/DISK-QUOTA-WARNING.txt")[0] != 0

    # over the budget: the watcher stops the server, logs it, and the spawn page says why
    assert sh(hub, filler, "head -c 8M /dev/zero > ~/big2")[0] == 0
    poll("the filler's server stopped", lambda: server_state(hub, filler) is None, timeout=30)
    page = hub.session(filler).get(f"{hub.url}hub/spawn").text
    assert 'data-status="over"' in page
    assert f"of its {BUDGET_MB} MiB disk budget; your server was stopped at" in page
    assert "You can start it again to delete files: you then have 2 minutes" in page
    logs = hub.client.containers.get(OWN.hub).logs(tail=300).decode(errors="replace")
    assert f"stopping {filler}'s servers (default)" in logs

    # the neighbour was untouched
    assert server_state(hub, neighbour)["ready"]
    assert hub.client.containers.get(container_name(neighbour)).status == "running"
    assert neighbour not in state(hub).get("users", {})

    # the user starts again to clean up: the grace window, then back under the warning level
    hub.spawn(filler)
    poll("the grace window", lambda: state(hub).get("users", {}).get(filler, {}).get("status") == "grace",
         timeout=30)
    assert "may run until" in sh(hub, filler, "cat ~/DISK-QUOTA-WARNING.txt")[1]
    assert sh(hub, filler, "rm ~/big1 ~/big2")[0] == 0
    poll("the record cleared", lambda: (lambda st: "users" in st and filler not in st["users"])(state(hub)),
         timeout=30)
    poll("the warning file removed", lambda: sh(hub, filler, "test -e ~/DISK-QUOTA-WARNING.txt")[0] != 0,
         timeout=10)
    assert server_state(hub, filler)["ready"]
    assert sh(hub, filler, "cat ~/keep.txt")[1].strip() == "hello"  # the user's files are theirs
    hub.stop(filler)
    page = hub.session(filler).get(f"{hub.url}hub/spawn").text
    assert 'name="image_tag"' in page and 'id="disk-budget"' not in page
    hub.stop(neighbour)
