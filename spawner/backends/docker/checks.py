"""Running a course-check container on the Docker engine (the I/O side of ``courses.checks``).

The course service never talks to Docker itself: it gives a ``CheckContainer`` (pure data) to
``DockerCheckRunner.run`` and gets the output lines as they come. The container is removed when
its program ends, when its deadline passes (a notebook that hangs), or when anything goes wrong,
so nothing of a check is left running. The services get it from the engine
(``DockerEngine.check_runner()``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from spawner.backends.docker.objects import host_config, mount


def create_kwargs(c) -> dict:
    """``containers.create`` keyword arguments of a ``CheckContainer``. Pure."""
    import docker.types

    return dict(
        image=c.image,
        name=c.name,
        command=list(c.command),
        user=str(c.uid),
        working_dir="/tmp",
        environment=dict(c.environment),
        labels=dict(c.labels),
        network_mode=c.network,
        mem_limit=c.memory,
        mounts=[docker.types.Mount(**mount(m)) for m in c.mounts],
        detach=True,
        **host_config(c.hardening),
    )


class DockerCheckRunner:
    """Runs check containers on one Docker client; ``run`` blocks (call it from a worker thread)."""

    def __init__(self, client):
        self.client = client

    def run(self, spec, on_line: Callable[[str], None]) -> dict:
        """Run ``spec`` to its end or its deadline; returns {"exit_code", "timed_out", "stderr"}."""
        from docker.errors import APIError, NotFound

        timed_out = threading.Event()
        container = self.client.containers.create(**create_kwargs(spec))

        def cut():
            timed_out.set()
            try:
                container.kill()
            except (APIError, NotFound):
                pass

        timer = threading.Timer(spec.deadline, cut)
        timer.daemon = True
        try:
            container.start()
            timer.start()
            buf = b""
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
                if len(buf) > 2**20:  # a line this long is no event; drop it
                    buf = b""
            if buf:
                on_line(buf.decode(errors="replace"))
            deadline = time.monotonic() + 30
            exit_code = None
            while time.monotonic() < deadline:
                container.reload()
                if container.status in ("exited", "dead"):
                    exit_code = container.attrs["State"].get("ExitCode")
                    break
                time.sleep(0.2)
            stderr = container.logs(stdout=False, stderr=True, tail=40).decode(errors="replace")
            return {"exit_code": None if timed_out.is_set() else exit_code, "timed_out": timed_out.is_set(),
                    "stderr": stderr}
        finally:
            timer.cancel()
            try:
                container.remove(force=True)
            except (APIError, NotFound):
                pass

    def remove_leftovers(self, prefix: str):
        from docker.errors import APIError, NotFound

        for c in self.client.containers.list(
                all=True, filters={"label": ["stackhub.role=course-check", f"stackhub.deployment={prefix}"]},
                ignore_removed=True):
            try:
                c.remove(force=True)
            except (APIError, NotFound):
                pass
