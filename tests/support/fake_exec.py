"""docker-py's low-level exec calls (``APIClient.exec_create/exec_start/exec_inspect``) without an
engine, for the unit tests of ``spawner.backends.docker.engine.bounded_exec`` and its callers."""

from __future__ import annotations


class FakeStream:
    """``exec_start(stream=True, demux=True)``: (stdout, stderr) chunks, closable."""

    def __init__(self, chunks):
        self.chunks, self.closed = list(chunks), False

    def __iter__(self):
        for chunk in self.chunks:
            if self.closed:
                raise OSError("closed")
            yield chunk

    def close(self):
        self.closed = True


class FakeExecAPI:
    """Answers each exec with ``answer(container, argv, user, environment) -> (code, chunks)``, where
    ``argv`` is the command without its ``timeout -s KILL N`` prefix (kept in ``timeouts``)."""

    def __init__(self, answer):
        self.answer = answer
        self.execs: list[tuple] = []
        self.timeouts: list[str] = []
        self.streams: list[FakeStream] = []
        self._codes: dict[str, int | None] = {}

    def exec_create(self, container, cmd, user=None, environment=None, workdir=None):
        assert cmd[:3] == ["timeout", "-s", "KILL"], cmd
        self.timeouts.append(cmd[3])
        argv = cmd[4:]
        self.execs.append((container, argv, user))
        exec_id = str(len(self.execs))
        code, chunks = self.answer(container, argv, user, environment)
        self._codes[exec_id] = code
        self.streams.append(FakeStream(chunks))
        return {"Id": exec_id}

    def exec_start(self, exec_id, stream=False, demux=False):
        assert stream and demux
        return self.streams[int(exec_id) - 1]

    def exec_inspect(self, exec_id):
        return {"ExitCode": self._codes[exec_id]}
