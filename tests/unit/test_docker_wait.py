"""LSSTDockerSpawner.start() returns once the server's port accepts connections (wait_until_listening),
and reports a container that died at start with its reason instead of waiting out http_timeout."""

import asyncio
import socket

import pytest
from tornado import web

from spawner.backends.docker.spawner import wait_until_listening


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _running():
    return None


async def test_returns_once_the_port_listens():
    port = _free_port()
    opened = []

    async def serve_later():
        await asyncio.sleep(0.5)
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        opened.append(server)

    task = asyncio.create_task(serve_later())
    await wait_until_listening("127.0.0.1", port, timeout=30, alive=_running, interval=0.05)
    assert opened, "returned before anything listened"
    await task
    opened[0].close()


async def test_a_dead_container_fails_the_start_with_its_reason():
    calls = []

    async def dead():
        calls.append(1)
        return "the server's container exited (ExitCode=1) before JupyterLab answered:\nImportError: boom"

    with pytest.raises(web.HTTPError) as e:
        await wait_until_listening("127.0.0.1", _free_port(), timeout=30, alive=dead, interval=0.01,
                                   check_every=0.05)
    assert e.value.status_code == 503 and "ImportError: boom" in e.value.log_message
    assert calls


async def test_gives_up_quietly_after_the_timeout_and_lets_jupyterhub_decide():
    await wait_until_listening("127.0.0.1", _free_port(), timeout=0.3, alive=_running, interval=0.05)


def test_the_start_gate_is_shared_by_all_spawners_and_off_at_zero(monkeypatch):
    import contextlib

    from spawner.backends.base import StackhubSpawnerMixin
    from spawner.backends.docker.spawner import LSSTDockerSpawner

    monkeypatch.setattr(StackhubSpawnerMixin, "_shared", {})
    a, b = LSSTDockerSpawner(start_concurrency=3), LSSTDockerSpawner(start_concurrency=3)
    gate = a.start_gate()
    assert isinstance(gate, asyncio.Semaphore) and gate._value == 3
    assert b.start_gate() is gate
    monkeypatch.setattr(StackhubSpawnerMixin, "_shared", {})
    assert isinstance(LSSTDockerSpawner(start_concurrency=0).start_gate(), contextlib.nullcontext)
