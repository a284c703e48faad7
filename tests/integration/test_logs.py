"""Bounded logs on the real engine: what a user prints to their server's stdout, the engine keeps
only up to logs.maxSize x logs.maxFiles (json-file by default); the hub and the proxy are bounded too."""

from __future__ import annotations

from pathlib import Path

from .hubfixture import OWN, container_name

MIB = 2**20
BOUND = {"Type": "json-file", "Config": {"max-size": "10M", "max-file": "3"}}


def log_bytes(container) -> int:
    """Bytes of the container's log files on the engine's host (the current one and the rotated)."""
    path = Path(container.attrs["LogPath"])
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_a_server_flooding_its_stdout_keeps_a_bounded_log_on_the_host(hub, user):
    name = user("log")
    hub.spawn(name)
    c = hub.client.containers.get(container_name(name))
    assert c.attrs["HostConfig"]["LogConfig"] == BOUND
    # 80 MiB of lines to the server's own stdout, as the user (the issue saw 50 MB become 50 MB of log)
    flood = "head -c 83886080 /dev/zero | tr '\\0' x | fold -w 1023 > /proc/1/fd/1"
    code, out = c.exec_run(["sh", "-c", flood], user="1000")
    assert code == 0, out
    c.reload()
    size = log_bytes(c)
    # json-file wraps each line in JSON (~70 bytes more); rotation happens at 10 MiB, 3 files kept
    assert size <= 3 * 10 * MIB + 64 * 1024, f"{size / MIB:.1f} MiB of log for 80 MiB written"
    assert size > 10 * MIB  # the flood did reach the log (and was rotated, not dropped)
    assert len(c.logs(tail=5).splitlines()) == 5  # `docker logs` still shows the newest lines
    hub.stop(name)


def test_the_hub_and_the_proxy_have_bounded_logs_and_memory_limits(hub):
    for name, memory in ((OWN.hub, 2 * 2**30), (OWN.proxy, 2**30)):
        attrs = hub.client.containers.get(name).attrs["HostConfig"]
        assert attrs["LogConfig"] == BOUND, name
        assert attrs["Memory"] == memory, name
