"""Every exec into a user's container is bounded: a time and a cap on the bytes read (no engine)."""

import threading
import time

import pytest

from spawner.backends.docker import engine as docker_engine
from spawner.backends.docker.engine import bounded_exec
from tests.support.fake_exec import FakeExecAPI, FakeStream


def test_output_past_the_cap_is_dropped_and_the_stream_closed():
    flood = [(b"x" * 1000, None)] * 1000  # a container that prints a megabyte (or forever)
    api = FakeExecAPI(lambda *a: (0, flood))
    out = bounded_exec(api, "c1", ["cat", "/dev/zero"], user="1000", timeout=5, max_bytes=4096)
    assert out.stdout == b"x" * 4096 and out.truncated and out.code is None
    assert api.streams[0].closed and api.timeouts == ["5"]  # killed in the container after 5 s too
    assert api.execs == [("c1", ["cat", "/dev/zero"], "1000")]


def test_stderr_is_capped_too_and_a_small_answer_passes_whole():
    api = FakeExecAPI(lambda *a: (3, [(b"ok", None), (None, b"e" * 100)]))
    out = bounded_exec(api, "c1", ["true"], user="1000", timeout=1, max_bytes=10)
    assert (out.stdout, out.stderr, out.truncated) == (b"ok", b"e" * 10, True)
    out = bounded_exec(FakeExecAPI(lambda *a: (3, [(b"ok", b"no")])), "c1", ["true"], user="1000", timeout=1,
                       max_bytes=10)
    assert (out.code, out.stdout, out.stderr, out.truncated, out.timed_out) == (3, b"ok", b"no", False, False)


class HangingStream(FakeStream):
    """One chunk, then nothing until closed (a server that never answers)."""

    def __init__(self):
        super().__init__([(b"partial", None)])
        self.gone = threading.Event()

    def __iter__(self):
        yield from self.chunks
        self.gone.wait(10)
        raise OSError("the stream was closed")

    def close(self):
        super().close()
        self.gone.set()


def test_a_command_that_never_ends_is_given_up_after_its_time(monkeypatch):
    monkeypatch.setattr(docker_engine, "EXEC_MARGIN", 0.0)
    api = FakeExecAPI(lambda *a: (None, []))
    api.exec_start = lambda exec_id, stream, demux: HangingStream()
    started = time.monotonic()
    out = bounded_exec(api, "c1", ["sleep", "infinity"], user="1000", timeout=0.2, max_bytes=100)
    assert time.monotonic() - started < 5
    assert out.timed_out and out.code is None and out.stdout == b"partial"


def test_an_exec_that_fails_to_start_is_an_engine_error():
    from docker.errors import APIError

    from spawner.backends.base import EngineError

    class Gone(FakeExecAPI):
        def exec_create(self, *a, **kw):
            raise APIError("container is not running")

    with pytest.raises(EngineError, match="not running"):
        bounded_exec(Gone(None), "c1", ["id"], user="1000", timeout=1, max_bytes=10)
