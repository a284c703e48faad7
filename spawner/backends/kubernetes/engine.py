"""The Kubernetes API as the services see it (``spawner.backends.base.Engine``), and the tag catalog.

- running servers: this deployment's user pods, found by their labels (``stackhub.role=server``,
  ``stackhub.deployment=<prefix>``); the raw user and server names come from the pod's annotations
  (label values cannot hold every username), and must agree with the pod's name;
- exec: the pods/exec subresource over a websocket (kubernetes_asyncio, kubespawner's own client),
  with the exit code from the status channel. Kubernetes runs it as the container's user, which
  is the server's uid: exec ``as`` anyone else is refused;
- the catalog: the ConfigMap ``<prefix>-stack-catalog`` that ``stackhub images catalog`` writes
  (one key per tag: image and labels), plus ``stack.registry``'s v2 tags when one is set;
- home sizes and throwaway containers have no cheap Kubernetes equivalent here: they raise
  (``NotImplementedError``, ``EngineError``), and the chart turns the budget watcher off.

The services call the engine from worker threads; each call runs its own event loop and API
client (``asyncio.run``), so nothing is shared across threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.stream import WsApiClient
from kubernetes_asyncio.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from spawner.backends.base import (EXEC_MAX_BYTES, EXEC_TIMEOUT, EngineError, ExecOutput, ExecResult, RunningServer,
                                   UnavailableRunner, in_time)
from spawner.backends.catalog_source import CatalogSource
from spawner.backends.kubernetes import objects
from spawner.core import names
from spawner.core.catalog import images_from_configmap
from spawner.core.config import StackhubConfig

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str | None:
    """The namespace this pod runs in (its service account's), None outside a pod."""
    try:
        return SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def current_namespace(cfg: StackhubConfig) -> str:
    """spawner.backend.namespace, else the namespace this pod runs in, else ``default``."""
    return getattr(cfg.spawner.backend, "namespace", None) or own_namespace() or "default"


async def api_configuration() -> client.Configuration:
    """In a pod: its service account; elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    conf = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=conf)
    else:
        # (the library reads $KUBECONFIG once, at import: read it at the call instead)
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=conf)
    return conf


def server_labels(pod: dict) -> dict:
    """The stackhub labels of a pod with the raw user and server names (from its annotations), as
    ``names.Deployment.is_server_of`` reads them."""
    meta = pod.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    ann = meta.get("annotations") or {}
    if objects.ANNOTATION_USER in ann:
        labels[names.LABEL_USER] = ann[objects.ANNOTATION_USER]
        labels[names.LABEL_SERVER] = ann.get(objects.ANNOTATION_SERVER, "")
    else:
        labels.pop(names.LABEL_USER, None)  # an escaped label value alone does not say who
    return labels


def is_running(pod: dict) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")


def exec_argv(argv: list[str], environment: dict | None) -> list[str]:
    """Kubernetes' exec takes no environment: ``env K=V ... argv``."""
    if not environment:
        return list(argv)
    return ["env", *[f"{k}={v}" for k, v in environment.items()], *argv]


class KubeEngine:
    def __init__(self, cfg: StackhubConfig, *, namespace: str | None = None, catalog_namespace: str | None = None,
                 timeout: float = 120, pool: int = 8):
        self.cfg = cfg
        self.deployment = names.Deployment(cfg.hub.prefix)
        self.namespace = namespace or current_namespace(cfg)
        # the catalog ConfigMap is the hub's (its namespace: the chart puts users' pods elsewhere)
        self.catalog_namespace = catalog_namespace or own_namespace() or self.namespace
        self.timeout = timeout
        self._catalog: CatalogSource | None = None

    # -- one event loop and client per call (callers are worker threads) ------------------------

    def _call(self, fn, *, ws: bool = False, timeout: float | None = None):
        timeout = self.timeout if timeout is None else timeout

        async def run():
            conf = await api_configuration()
            api_client = WsApiClient(configuration=conf) if ws else client.ApiClient(configuration=conf)
            async with api_client:
                return await asyncio.wait_for(fn(client.CoreV1Api(api_client), api_client), timeout)

        try:
            return asyncio.run(run())
        except ApiException as e:
            raise EngineError(f"Kubernetes API: {e.status} {e.reason}") from None
        except asyncio.TimeoutError:
            raise EngineError(f"Kubernetes API: no answer within {timeout:g} s") from None

    # -- the catalog ------------------------------------------------------------------------------

    def list_images(self) -> list[dict]:
        """The catalog ConfigMap's entries (Docker's image list shape); none when it is missing."""
        name = self.deployment.catalog_configmap

        async def read(v1, api):
            try:
                cm = await v1.read_namespaced_config_map(name, self.catalog_namespace)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            return cm.data

        return images_from_configmap(self._call(read))

    def catalog_source(self) -> CatalogSource:
        if self._catalog is None:
            self._catalog = CatalogSource(self.list_images, self.cfg.stack)
        return self._catalog

    # -- servers ----------------------------------------------------------------------------------

    def _pods(self) -> list[dict]:
        selector = f"{names.LABEL_ROLE}=server,{names.LABEL_DEPLOYMENT}={self.deployment.prefix}"

        async def list_pods(v1, api):
            pods = await v1.list_namespaced_pod(self.namespace, label_selector=selector)
            return [api.sanitize_for_serialization(p) for p in pods.items]

        return self._call(list_pods)

    def _handle(self, pod: dict) -> RunningServer | None:
        labels = server_labels(pod)
        user, server = labels.get(names.LABEL_USER), labels.get(names.LABEL_SERVER, "")
        name = pod["metadata"]["name"]
        # the name must be the one stackhub gives that user's server: annotations alone do not make a pod theirs
        if not user or not self.deployment.owns_server(labels) or name != names.kube_name(self.deployment.server(user, server)):
            return None
        return RunningServer(user=user, server=server, name=name, ref=pod)

    def running_servers(self) -> dict[str, RunningServer]:
        """username -> one running server (the default server preferred: all share the home)."""
        out: dict[str, RunningServer] = {}
        for pod in self._pods():
            h = self._handle(pod) if is_running(pod) else None
            if h and (h.user not in out or not h.server):
                out[h.user] = h
        return out

    def server(self, user: str, server: str = "") -> RunningServer | None:
        name = names.kube_name(self.deployment.server(user, server))

        async def read(v1, api):
            try:
                return api.sanitize_for_serialization(await v1.read_namespaced_pod(name, self.namespace))
            except ApiException as e:
                if e.status == 404:
                    return None
                raise

        pod = self._call(read)
        if pod is None or not is_running(pod) or not self.deployment.is_server_of(server_labels(pod), user, server):
            return None
        return self._handle(pod)

    def exec(self, handle: RunningServer, argv, *, user: str, environment: dict | None = None,
             timeout: float = EXEC_TIMEOUT, max_bytes: int = EXEC_MAX_BYTES) -> ExecResult:
        """``argv`` in the server's pod, killed there after ``timeout`` s, at most ``max_bytes`` read a stream."""
        uid = str(self.cfg.spawner.uid)
        if str(user) != uid:
            raise EngineError(f"exec on Kubernetes runs as the server's uid {uid}, not {user!r}")
        command = exec_argv(in_time(list(argv), timeout), environment)

        async def run(v1, api):
            ctx = await v1.connect_get_namespaced_pod_exec(
                handle.name, self.namespace, container="notebook", command=command,
                stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
            output, code = ExecOutput(max_bytes), None
            try:
                async with asyncio.timeout(timeout), ctx as ws:
                    async for msg in ws:
                        data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
                        if not data:
                            continue
                        channel, payload = data[0], data[1:]
                        if channel == ERROR_CHANNEL and payload:
                            code = WsApiClient.parse_error_data(payload)
                        elif channel in (STDOUT_CHANNEL, STDERR_CHANNEL) and not output.add(
                                *((payload, None) if channel == STDOUT_CHANNEL else (None, payload))):
                            break
            except TimeoutError:
                return output.result(None, timed_out=True)
            return output.result(code)

        return self._call(run, ws=True, timeout=max(self.timeout, timeout + 10))

    def volume_usage(self):
        raise NotImplementedError("home sizes are not measured on Kubernetes (volumes.homeBudget: null)")

    def home_size(self, volume: str, *, timeout: float):
        raise NotImplementedError("home sizes are not measured on Kubernetes (volumes.homeBudget: null)")

    def own_image(self, fallback: str) -> str:
        return fallback

    def check_runner(self):
        return UnavailableRunner("course x tag checks run throwaway containers, which the Kubernetes "
                                 "backend does not start yet; check the course on a Docker host")

    @contextlib.contextmanager
    def throwaway(self, **create):
        raise EngineError("throwaway containers (a course's git fetch) are not available on Kubernetes yet; "
                          "publish the course as an upload")
        yield  # pragma: no cover


def make_engine(cfg: StackhubConfig, **kw) -> KubeEngine:
    return KubeEngine(cfg, **kw)


__all__ = ["KubeEngine", "make_engine"]
