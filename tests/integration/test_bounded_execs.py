"""Execs into a user's server and the disk watch's own measurement of a home, on the real engine.

A container of the stack image runs as a user's server would (uid 1000, no capabilities); the
services' engine (``DockerEngine``) runs commands in it as they do. What the "user" makes the
command do (print without end, never finish) costs the service a bounded read and a bounded time,
and leaves nothing running. No hub needed.
"""

from __future__ import annotations

import time
import uuid

import pytest

from spawner.backends.base import RunningServer
from spawner.backends.docker.engine import DockerEngine
from spawner.core.config import StackhubConfig

from .hubfixture import TEST_PREFIX


@pytest.fixture
def engine(docker_client):
    cfg = StackhubConfig.model_validate({"hub": {"prefix": TEST_PREFIX, "image": "stackhub/hub:0.1.0"}})
    return DockerEngine(cfg, client=docker_client)


@pytest.fixture
def server(docker_client, stack_tags):
    c = docker_client.containers.run(
        f"stackhub/lsst-stack:{stack_tags[0]}", ["sleep", "600"], entrypoint=[], user="1000", cap_drop=["ALL"],
        name=f"{TEST_PREFIX}-exec-{uuid.uuid4().hex[:6]}", network_mode="none", detach=True,
        labels={"stackhub.deployment": TEST_PREFIX})
    yield RunningServer("eve", "", c.name, ref=c)
    c.remove(force=True)


def processes(server) -> list[str]:
    code, out = server.ref.exec_run(["sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"])
    return [line for line in out.decode().splitlines() if line.strip()]


def test_a_server_printing_without_end_is_read_up_to_the_cap_and_the_command_ends(engine, server):
    started = time.monotonic()
    out = engine.exec(server, ["sh", "-c", "yes attacker"], user="1000", timeout=5, max_bytes=2**20)
    assert out.truncated and len(out.stdout) == 2**20 and out.code is None
    assert time.monotonic() - started < 5  # the service stops reading at the cap, not at the timeout
    # the engine keeps the command's output pipe open: it blocks (no CPU) until its timeout kills it
    while [p for p in processes(server) if p.startswith("yes")]:
        assert time.monotonic() - started < 10, processes(server)
        time.sleep(0.5)


def test_a_command_that_never_ends_is_given_up_and_killed_in_the_server(engine, server):
    started = time.monotonic()
    out = engine.exec(server, ["sh", "-c", "echo started; exec sleep 3600"], user="1000", timeout=2, max_bytes=100)
    assert out.timed_out and out.stdout == b"started\n"
    assert time.monotonic() - started < 8
    assert not [p for p in processes(server) if p.startswith("sleep 3600")], processes(server)
    # and an ordinary command still answers whole, with its exit status
    out = engine.exec(server, ["sh", "-c", "echo hi; echo err >&2; exit 3"], user="1000", timeout=5, max_bytes=100)
    assert (out.code, out.stdout, out.stderr, out.truncated, out.timed_out) == (3, b"hi\n", b"err\n", False, False)


def test_the_disk_watch_measures_one_home_alone_including_what_the_user_locked_away(engine, docker_client,
                                                                                   stack_tags):
    volume = docker_client.volumes.create(f"{TEST_PREFIX}-home-size-{uuid.uuid4().hex[:6]}",
                                          labels={"stackhub.deployment": TEST_PREFIX})
    try:
        script = ("mkdir -p /v/u/locked && head -c 3000000 /dev/zero > /v/u/a && head -c 2000000 /dev/zero > "
                  "/v/u/locked/b && chown -R 1000:1000 /v && chmod 000 /v/u/locked")
        docker_client.containers.run(f"stackhub/lsst-stack:{stack_tags[0]}", ["sh", "-c", script], entrypoint=[],
                                     user="0", volumes={volume.name: {"bind": "/v"}}, remove=True)
        size = engine.home_size(volume.name, timeout=30)
        assert size is not None and 5_000_000 <= size < 5_100_000, size
        left = docker_client.containers.list(all=True, filters={"label": [f"stackhub.deployment={TEST_PREFIX}",
                                                                          "stackhub.role=home-size"]})
        assert left == []  # the helper is gone
    finally:
        volume.remove(force=True)
