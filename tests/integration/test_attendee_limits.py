"""Limits on abuse that need a hub with tight settings (issue 22): one restart for all of them, and one
back to the test defaults at the end. Every request of the tests comes from one address.

Each attempt must be refused with HTTP 429 (Retry-After) and leave no account, session or server.
"""

from __future__ import annotations

import re
import uuid

import pytest

from .hubfixture import OWN
from .test_attendee_threats import me, model, new_name, post_login, try_login


TIGHT = {"auth": {"loginThrottle": {"window": 60, "failuresPerName": 3, "failuresPerAddress": 6,
                                    "claimsPerAddressPerHour": 2}}}


def running(hub) -> int:
    return sum(len(u["servers"]) for u in hub.api("GET", "/users?state=active").json())


@pytest.fixture(scope="module")
def tight(hub):
    """The hub with tight limits; room for exactly one more server than runs now (other tests' servers)."""
    hub.reconfigure({**TIGHT, "hub": {"activeServerLimit": running(hub) + 1}})
    yield hub
    hub.reconfigure()


def assert_429(r):
    assert r.status_code == 429, (r.status_code, r.text[:500])
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    return int(r.headers["Retry-After"])


def test_claims_per_address_are_capped(tight):
    hub = tight
    first, second, third = new_name("one"), new_name("two"), new_name("three")
    assert try_login(hub, first, "own-password-1", hub.password)[0]
    assert try_login(hub, second, "own-password-2", hub.password)[0]
    s, r = post_login(hub, third, "own-password-3", hub.password)
    assert_429(r)
    assert model(hub, third) is None and me(hub, s) is None
    assert try_login(hub, first, "own-password-1")[0]  # logging in is not claiming


def test_the_hub_counts_the_client_the_proxy_saw_never_the_proxy_itself(tight):
    """Else every attendee would share the proxy's address and one limit."""
    hub = tight
    networks = hub.client.api.inspect_container(OWN.proxy)["NetworkSettings"]["Networks"].values()
    proxy_ips = {n["IPAddress"] for n in networks}
    logs = hub.client.containers.get(OWN.hub).logs(tail=3000).decode()
    seen = set(re.findall(r"claimed from (\S+)", logs))
    assert seen and not seen & proxy_ips, (seen, proxy_ips)


def test_failed_logins_are_throttled_per_name_and_per_address_with_429(tight):
    hub = tight
    victim = hub.create_user(new_name("victim"))
    password = hub.user_password(victim)
    for i in range(3):
        assert not try_login(hub, victim, f"guess-{i}-1234")[0]
    # the fourth try is held even with the right password, whatever the client says it is
    for headers in ({}, {"X-Forwarded-For": "203.0.113.9"}, {"X-Real-Ip": "203.0.113.10"}):
        s, r = post_login(hub, victim, password, headers=headers)
        assert_429(r)
        assert me(hub, s) is None
    # three more failures on other names: the address's limit (6) holds every name
    for i in range(3):
        assert not try_login(hub, f"nobody-{i}-{uuid.uuid4().hex[:4]}", "guess-1234")[0]
    s, r = post_login(hub, new_name("fresh"), "fresh-own-pw", hub.password)
    assert_429(r)
    assert me(hub, s) is None and hub.api("GET", "/").status_code == 200


def test_active_server_limit_holds_the_whole_hub(tight, stack_tags):
    hub = tight
    one, two = new_name("srv"), new_name("srv")
    for n in (one, two):
        hub.create_user(n)
    hub.spawn(one, {"image_tag": stack_tags[0]})
    r = hub.api("POST", f"/users/{two}/server", json={"image_tag": stack_tags[0]})
    assert r.status_code == 429, r.text
    assert model(hub, two)["servers"] == {}
    hub.stop(one)
