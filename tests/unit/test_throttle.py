"""Login throttling windows (spawner.core.throttle): pure, with the clock passed in."""

from spawner.core.throttle import LoginThrottle, Window, forwarded_client


def test_a_window_refuses_past_its_limit_until_the_oldest_event_leaves():
    w = Window(limit=3, window=60)
    for t in (0, 10, 20):
        assert w.retry_after("k", t) == 0
        w.add("k", t)
    assert w.retry_after("k", 20) == 40
    assert w.retry_after("k", 59.5) == 1  # never 0 while refused
    assert w.retry_after("k", 60) == 0
    assert w.retry_after("other", 20) == 0


def test_limit_zero_is_no_limit():
    w = Window(limit=0, window=60)
    for t in range(100):
        w.add("k", t)
    assert w.retry_after("k", 100) == 0


def test_memory_stays_bounded_under_a_flood_of_names():
    w = Window(limit=5, window=60, max_keys=100)
    for i in range(10_000):
        w.add(f"name{i}", 1)
    assert len(w._events) == 100
    w.add("k", 1)
    assert len(w._events["k"]) == 1 and len(w._events) == 100
    for _ in range(50):
        w.add("k", 2)
    assert len(w._events["k"]) == 5  # each key keeps at most `limit` times


def test_login_throttle_counts_names_and_addresses_apart():
    t = LoginThrottle.from_limits(failures_per_name=2, failures_per_address=3, window=60,
                                  claims_per_address_per_hour=1)
    t.failed("ada", "a1", 0)
    t.failed("ada", "a2", 0)
    assert t.login_wait("ada", "a3", 1) == 59
    assert t.login_wait("bob", "a1", 1) == 0
    t.failed("bob", "a1", 0)
    t.failed("cat", "a1", 0)
    assert t.login_wait("dan", "a1", 1) == 59
    assert t.claim_wait("a1", 0) == 0
    t.claimed("a1", 0)
    assert t.claim_wait("a1", 10) == 3590 and t.claim_wait("a2", 10) == 0


def test_forwarded_for_counts_only_from_a_trusted_proxy_and_only_its_last_entry():
    proxy = {"172.18.0.3"}
    assert forwarded_client("172.18.0.3", "6.6.6.6, 203.0.113.5", proxy) == "203.0.113.5"
    assert forwarded_client("172.18.0.3", None, proxy) == "172.18.0.3"
    assert forwarded_client("172.18.0.3", " , ", proxy) == "172.18.0.3"
    assert forwarded_client("172.18.0.9", "203.0.113.5", proxy) == "172.18.0.9"
