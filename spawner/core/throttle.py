"""Login throttling: failures per name and per client address, and new claims per address. Pure.

Only *failed* logins count, so a room of attendees typing the right password is never slowed. Once
a key (a name, or an address) has had ``limit`` events within ``window`` seconds, every further
attempt with it is refused until the oldest of those events leaves the window; the refusal says
how long that is (HTTP 429 with Retry-After). The clock is passed in, so tests need no sleeping.

Memory is bounded: each key keeps at most ``limit`` times, and the table at most ``max_keys`` keys
(the ones idle longest go first), so a flood of made-up names cannot grow the hub.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class Window:
    """At most ``limit`` events per key in any ``window`` seconds (``limit`` 0: no limit)."""

    limit: int
    window: float
    max_keys: int = 50_000
    _events: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def retry_after(self, key: str, now: float) -> int:
        """Seconds until ``key`` may try again; 0 when it may now."""
        if not self.limit:
            return 0
        times = self._events.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._events[key]
            return 0
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(times[0] + self.window - now))

    def add(self, key: str, now: float) -> None:
        if not self.limit:
            return
        times = self._events.pop(key, None) or deque(maxlen=self.limit)
        times.append(now)
        self._events[key] = times  # most recently used last
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


@dataclass
class LoginThrottle:
    """The three windows of the tutorial login (limits from auth.loginThrottle)."""

    per_name: Window
    per_address: Window
    claims: Window

    @classmethod
    def from_limits(cls, *, failures_per_name: int, failures_per_address: int, window: float,
                    claims_per_address_per_hour: int) -> "LoginThrottle":
        return cls(Window(failures_per_name, window), Window(failures_per_address, window),
                   Window(claims_per_address_per_hour, 3600))

    def login_wait(self, name: str, address: str, now: float) -> int:
        """Seconds before this name may be tried from this address (0: go ahead)."""
        return max(self.per_name.retry_after(name, now), self.per_address.retry_after(address, now))

    def failed(self, name: str, address: str, now: float) -> None:
        self.per_name.add(name, now)
        self.per_address.add(address, now)

    def claim_wait(self, address: str, now: float) -> int:
        return self.claims.retry_after(address, now)

    def claimed(self, address: str, now: float) -> None:
        self.claims.add(address, now)


def forwarded_client(peer: str, forwarded_for: str | None, trusted_proxies: frozenset[str] | set[str]) -> str:
    """The client's address: the last X-Forwarded-For entry (what the proxy appended) when the
    request came from a trusted proxy, else the peer itself (anyone else's header is ignored)."""
    if peer in trusted_proxies and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last
    return peer
