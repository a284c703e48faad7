"""The Docker engine as the services see it (``spawner.backends.base.Engine``): this deployment's
running servers found by their labels, exec as the user, home volume sizes, throwaway containers.

The services never import docker themselves; a Swarm or Kubernetes backend gives the same calls.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import docker
import docker.types
from docker import errors as docker_errors

from spawner.backends.base import (EXEC_MAX_BYTES, EXEC_TIMEOUT, EngineError, ExecOutput, ExecResult, RunningServer,
                                   in_time)
from spawner.backends.catalog_source import CatalogSource
from spawner.core import names
from spawner.core.config import StackhubConfig
from spawner.core.disk import VolumeUsage
from spawner.core.orphans import ServerObject
from spawner.core.specs import container_log_config, log_limit


@contextlib.contextmanager
def engine_errors():
    """Docker's exceptions as ``EngineError`` (e.g. a throwaway whose time ran out is gone)."""
    try:
        yield
    except docker_errors.DockerException as e:
        raise EngineError(str(e)) from None


EXEC_MARGIN = 2.0  # seconds the reader waits past an exec's timeout for the in-container kill


def bounded_exec(api, container: str, argv, *, user: str, environment: dict | None = None, workdir: str | None = None,
                 timeout: float = EXEC_TIMEOUT, max_bytes: int = EXEC_MAX_BYTES) -> ExecResult:
    """Run ``argv`` in ``container`` (docker-py's low-level ``APIClient``), reading at most
    ``max_bytes`` of each stream and waiting at most ``timeout`` seconds.

    The command runs under ``timeout -s KILL`` in the container; here the stream is closed when the
    time is up (which ends the blocked read) or the output passes the cap (the engine keeps the
    command's pipe open: it blocks, then its timeout kills it), so a container that prints without
    end or never answers costs its caller nothing more.
    """
    with engine_errors():
        exec_id = api.exec_create(container, in_time(list(argv), timeout), user=user, environment=environment,
                                  workdir=workdir)["Id"]
        stream = api.exec_start(exec_id, stream=True, demux=True)
    output, late = ExecOutput(max_bytes), threading.Event()

    def cut():
        late.set()
        with contextlib.suppress(Exception):
            stream.close()

    timer = threading.Timer(timeout + EXEC_MARGIN, cut)  # the in-container kill ends it first
    timer.daemon = True
    timer.start()
    try:
        for stdout, stderr in stream:
            if not output.add(stdout, stderr):
                break
    except Exception:  # noqa: BLE001 (closed by the timer, or the container went away)
        if not late.is_set():
            raise EngineError(f"exec in {container[:12]} failed") from None
    finally:
        timer.cancel()
        with contextlib.suppress(Exception):
            stream.close()
    code = None
    if not (late.is_set() or output.truncated):
        with engine_errors():
            code = api.exec_inspect(exec_id).get("ExitCode")
    return output.result(code, timed_out=late.is_set() or code == 137)


class DockerThrowaway:
    """One created-and-started container, removed (with its volumes) when the ``with`` ends."""

    def __init__(self, container):
        self._c = container

    def put(self, path: str, tar_bytes: bytes) -> None:
        with engine_errors():
            self._c.put_archive(path, tar_bytes)

    def exec(self, argv, *, user: str, workdir: str | None = None, timeout: float = EXEC_TIMEOUT,
             max_bytes: int = EXEC_MAX_BYTES) -> ExecResult:
        return bounded_exec(self._c.client.api, self._c.id, argv, user=user, workdir=workdir, timeout=timeout,
                            max_bytes=max_bytes)

    def get_archive(self, path: str):
        with engine_errors():
            stream, _ = self._c.get_archive(path)
        return stream


class DockerEngine:
    def __init__(self, cfg: StackhubConfig, *, client=None, timeout: float = 120, pool: int = 8):
        self.cfg = cfg
        self.deployment = names.Deployment(cfg.hub.prefix)
        self.client = client if client is not None else docker.from_env(max_pool_size=pool, timeout=timeout)
        self._catalog: CatalogSource | None = None

    def catalog_source(self) -> CatalogSource:
        if self._catalog is None:
            repository = self.cfg.stack.repository
            self._catalog = CatalogSource(lambda: self.client.api.images(name=repository), self.cfg.stack)
        return self._catalog

    def _handle(self, c) -> RunningServer:
        labels = c.labels or {}
        return RunningServer(user=labels[names.LABEL_USER], server=labels.get(names.LABEL_SERVER, ""),
                             name=c.name, ref=c)

    def running_servers(self) -> dict[str, RunningServer]:
        """username -> one running server (all of a user's servers share the home; the default
        server is preferred)."""
        out: dict[str, RunningServer] = {}
        found = self.client.containers.list(
            filters={"label": [f"{names.LABEL_ROLE}=server"], "status": "running"},
            ignore_removed=True)  # a server removed between the list and its inspect is not an error
        for c in found:
            if not self.deployment.owns_server(c.labels):
                continue
            h = self._handle(c)
            if h.user not in out or not h.server:
                out[h.user] = h
        return out

    def server_objects(self) -> list[ServerObject]:
        """Every user container of this deployment, running or not (the orphan check's view)."""
        found = self.client.containers.list(all=True, filters={"label": [f"{names.LABEL_ROLE}=server"]},
                                            ignore_removed=True)  # one removed meanwhile is no error
        return [ServerObject(user=c.labels[names.LABEL_USER], server=c.labels.get(names.LABEL_SERVER, ""), name=c.name)
                for c in found if self.deployment.owns_server(c.labels)]

    def remove_server(self, obj: ServerObject) -> None:
        """Remove one user container (with its anonymous volumes; never the home), if still ours."""
        try:
            c = self.client.containers.get(obj.name)
        except docker_errors.NotFound:
            return
        if self.deployment.is_server_of(c.labels, obj.user, obj.server):
            c.remove(force=True, v=True)

    def server(self, user: str, server: str = "") -> RunningServer | None:
        """``user``'s running server ``server``, or None (gone, stopped, or a container under that
        name that is not theirs)."""
        try:
            c = self.client.containers.get(self.deployment.server(user, server))
        except docker_errors.NotFound:
            return None
        if c.status != "running" or not self.deployment.is_server_of(c.labels, user, server):
            return None
        return self._handle(c)

    def exec(self, handle: RunningServer, argv, *, user: str, environment: dict | None = None,
             timeout: float = EXEC_TIMEOUT, max_bytes: int = EXEC_MAX_BYTES) -> ExecResult:
        return bounded_exec(self.client.api, handle.ref.id, argv, user=user, environment=environment,
                            timeout=timeout, max_bytes=max_bytes)

    def volume_usage(self) -> list[VolumeUsage]:
        """Sizes of every volume (``docker system df``; slow on a big engine, so callers cache)."""
        out = []
        for v in self.client.df().get("Volumes") or ():
            size = (v.get("UsageData") or {}).get("Size", -1)
            out.append(VolumeUsage(name=v.get("Name", ""), labels=v.get("Labels") or {},
                                   size=size if isinstance(size, int) else -1))
        return out

    def home_size(self, volume: str, *, timeout: float) -> int | None:
        """Bytes in one volume (``du -sb``), measured by a throwaway helper of the hub's image that
        has only that volume (read-only), no network and one capability (reading any file, so a
        ``chmod 000`` folder is counted too); None when it takes longer than ``timeout`` or fails.
        The disk watch's way round a ``docker system df`` that one home with millions of files holds up."""
        create = dict(image=self.own_image(self.cfg.hub.image), entrypoint=["sleep"], command=[str(int(timeout) + 30)],
                      user="0", network_mode="none", cap_drop=["ALL"], cap_add=["DAC_READ_SEARCH"],
                      security_opt=["no-new-privileges"], read_only=True, pids_limit=64, mem_limit="256m",
                      labels=self.deployment.labels("home-size"),
                      mounts=[docker.types.Mount(target="/v", source=volume, type="volume", read_only=True)])
        with self.throwaway(**create) as c:
            out = c.exec(["du", "-s", "-x", "-b", "/v"], user="0", timeout=timeout, max_bytes=4096)
        try:
            return int(out.stdout.split()[0]) if out.code == 0 else None
        except (ValueError, IndexError):
            return None

    def own_image(self, fallback: str) -> str:
        """The image id of the container this process runs in (the hub's), else ``fallback``'s id.

        An id, not a tag: a rebuild that moves the tag must not change the code a throwaway runs.
        """
        try:
            return self.client.containers.get(socket.gethostname()).image.id
        except Exception:  # noqa: BLE001 (not in a container, or another hostname)
            try:
                return self.client.images.get(fallback).id
            except Exception:  # noqa: BLE001
                return fallback

    @contextlib.contextmanager
    def throwaway(self, **create):
        """A started container from ``containers.create(**create)``, removed with its volumes after.
        Its log is bounded as every container's (logs), unless ``create`` says otherwise."""
        create = {**container_log_config(log_limit(self.cfg)), **create}
        try:
            c = self.client.containers.create(**create)
        except docker_errors.DockerException as e:
            raise EngineError(f"cannot create the container ({create.get('image')}): {e}") from None
        try:
            c.start()
            yield DockerThrowaway(c)
        finally:
            with contextlib.suppress(docker_errors.DockerException):
                c.remove(force=True, v=True)


    def check_runner(self):
        """Runs the course x tag check containers (``spawner.backends.docker.checks``)."""
        from spawner.backends.docker.checks import DockerCheckRunner

        return DockerCheckRunner(self.client)


def make_engine(cfg: StackhubConfig, **kw) -> DockerEngine:
    return DockerEngine(cfg, **kw)
