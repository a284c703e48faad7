# dask-gateway's configuration in stackhub's chart (spawner.backend.daskGateway; docs/dask.md).
#
# Read by `dask-gateway-server` (the API server, KubeBackend) and by `dask-gateway-server
# kube-controller` from the ConfigMap <prefix>-dask-gateway, next to settings.json: the chart's
# values for the gateway, rendered by helm/stackhub/templates/dask-gateway.yaml (the same keys as
# the config model's DaskGateway, plus the names of this deployment). Nothing here is a secret:
# the gateway's JupyterHub token comes from the hub's Secret as JUPYTERHUB_API_TOKEN.
#
# `c` is the traitlets config object dask-gateway-server hands to its config file.
import json
import os
import re
import secrets
import time
from urllib.parse import urlencode

from aiohttp import ClientSession, web

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.backends.kubernetes.controller import KubeController
from dask_gateway_server.options import Float, Options, String
from dask_gateway_server.routes import default_routes
from kubernetes_asyncio import client as kube_client
from kubernetes_asyncio.client.rest import ApiException

S = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "settings.json")))
G = S["gateway"]
GIB = 2**30
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": GIB, "T": 2**40}


def memory_bytes(text):
    """Bytes of a size like 2G or 512M (binary units, as the config model reads them)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", str(text).strip().upper())
    if not m:
        raise ValueError(f"{text!r} is not a size like 2G or 512M")
    return int(float(m.group(1)) * UNITS[m.group(2)])


class StackhubKubeBackend(KubeBackend):
    """KubeBackend with a per-user cap on clusters (KubeBackend has only per-cluster limits)."""

    async def start_cluster(self, user, cluster_options):
        active = await self.list_clusters(username=user.name)
        if len(active) >= int(G["maxClusters"]):
            raise PublicException(f"{user.name} already runs {len(active)} clusters (at most {G['maxClusters']}): "
                                  "shut one down first (cluster.shutdown())")
        return await super().start_cluster(user, cluster_options)


def cluster_network_policy(controller, cluster):
    """A NetworkPolicy of one cluster: its scheduler and workers are reached by each other only
    (the chart's static policy adds Traefik and the gateway). Owned by the DaskCluster, so it goes
    with it."""
    name = cluster["metadata"]["name"]
    own = {"gateway.dask.org/instance": controller.gateway_instance, "gateway.dask.org/cluster": name}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"dask-{name}",
            "labels": {**controller.get_labels(name), "stackhub.deployment": S["prefix"], "stackhub.role": "dask"},
            "ownerReferences": [{"apiVersion": cluster["apiVersion"], "kind": cluster["kind"],
                                 "name": name, "uid": cluster["metadata"]["uid"]}],
        },
        "spec": {"podSelector": {"matchLabels": own}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": own}}]}]},
    }


# (the file may be loaded twice in one process: wrap the original only)
_create_secret = KubeController.__dict__.get("_original_create_secret", KubeController.create_secret_if_not_exists)
KubeController._original_create_secret = _create_secret


async def create_secret_and_network_policy(self, cluster):
    """The controller's first step for a new cluster (its TLS Secret), and then its NetworkPolicy."""
    secret = await _create_secret(self, cluster)
    policy = cluster_network_policy(self, cluster)
    try:
        await kube_client.NetworkingV1Api(api_client=self.api_client).create_namespaced_network_policy(
            cluster["metadata"]["namespace"], policy)
    except ApiException as exc:
        if exc.status != 409:
            raise
    return secret


if S.get("networkPolicy"):
    KubeController.create_secret_if_not_exists = create_secret_and_network_policy


# --- dashboards behind the hub's login -----------------------------------------------------------
# Traefik asks the gateway before it passes a request to a cluster's dashboard (the forwardAuth
# middleware S["dashboardsMiddleware"], first on every cluster's route): the browser's session must
# be the cluster's owner's. Sessions come from JupyterHub's OAuth: the gateway is the hub service
# dask-gateway, its OAuth client service-dask-gateway with the service's token as client secret.
# Sessions live in this process (one replica); a restart asks the hub again (no password: the hub
# remembers its login).
SESSION_COOKIE = "stackhub-dask-session"
STATE_COOKIE = "stackhub-dask-state"
SESSION_SECONDS = 8 * 3600
CLIENT_ID = f"service-{S['serviceName']}"
CALLBACK = f"{S['proxyPrefix']}/oauth_callback"
DASHBOARD = re.compile(re.escape(S["proxyPrefix"]) + r"/clusters/([a-zA-Z0-9.-]+)/")
_sessions = {}  # cookie -> (expiry, username)


def session_user(request):
    entry = _sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    if entry is None or entry[0] < time.time():
        return None
    return entry[1]


def cookie(response, name, value, max_age):
    response.set_cookie(name, value, path=S["proxyPrefix"] + "/", max_age=max_age, httponly=True,
                        secure=True, samesite="Lax")


@default_routes.get("/api/stackhub/dashboard-auth")
async def dashboard_auth(request):
    """Traefik's forwardAuth: 200 for the cluster's owner, 403 for anyone else, and to the hub's
    login (OAuth) without a session."""
    m = DASHBOARD.match(request.headers.get("X-Forwarded-Uri", ""))
    if not m:
        raise web.HTTPForbidden()
    user = session_user(request)
    if user is None:
        state = secrets.token_urlsafe(24)
        query = urlencode({"client_id": CLIENT_ID, "redirect_uri": CALLBACK, "response_type": "code",
                           "state": f"{state}:{request.headers['X-Forwarded-Uri']}"})
        response = web.HTTPFound(f"{S['hubAuthorizeUrl']}?{query}")
        cookie(response, STATE_COOKIE, state, 600)
        raise response
    cluster = await request.app["backend"].get_cluster(m.group(1))
    if cluster is None or cluster.username != user:
        raise web.HTTPForbidden(text="not your cluster")
    return web.Response(text="ok")


@default_routes.get("/oauth_callback")
async def oauth_callback(request):
    """JupyterHub's OAuth callback (<proxyPrefix>/oauth_callback): the code for a token, the token
    for the user's name, a session cookie, back to the dashboard."""
    state, _, target = request.query.get("state", "").partition(":")
    if not state or request.cookies.get(STATE_COOKIE) != state or not DASHBOARD.match(target):
        raise web.HTTPForbidden(text="OAuth state mismatch")
    hub = S["hubApiUrl"]
    async with ClientSession() as http:
        r = await http.post(f"{hub}/oauth2/token", data={
            "client_id": CLIENT_ID, "client_secret": os.environ["JUPYTERHUB_API_TOKEN"],
            "grant_type": "authorization_code", "code": request.query.get("code", ""), "redirect_uri": CALLBACK})
        if r.status != 200:
            raise web.HTTPForbidden(text="the hub refused the OAuth code")
        token = (await r.json())["access_token"]
        r = await http.get(f"{hub}/user", headers={"Authorization": f"token {token}"})
        if r.status != 200:
            raise web.HTTPForbidden(text="the hub does not know the token")
        name = (await r.json())["name"]
    session = secrets.token_urlsafe(32)
    _sessions[session] = (time.time() + SESSION_SECONDS, name)
    response = web.HTTPFound(target)
    cookie(response, SESSION_COOKIE, session, SESSION_SECONDS)
    response.del_cookie(STATE_COOKIE, path=S["proxyPrefix"] + "/")
    raise response


# --- the API server ---------------------------------------------------------------------------
c.DaskGateway.address = ":8000"
c.DaskGateway.backend_class = StackhubKubeBackend
c.KubeBackend.gateway_instance = S["instance"]
c.KubeBackend.api_url = S["apiUrl"]
c.KubeController.gateway_instance = S["instance"]
c.KubeController.api_url = S["apiUrl"]
c.KubeController.address = ":8000"

# JupyterHub authenticates: the user's server token must carry access:services!service=dask-gateway
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.JupyterHubAuthenticator.jupyterhub_api_url = S["hubApiUrl"]
c.JupyterHubAuthenticator.jupyterhub_service_name = S["serviceName"]

# --- Traefik routes, made by the controller -----------------------------------------------------
c.KubeController.proxy_prefix = S["proxyPrefix"]
c.KubeController.proxy_web_middlewares = [{"name": S["dashboardsMiddleware"], "namespace": S["namespace"]},
                                          {"name": S["clustersMiddleware"], "namespace": S["namespace"]}]
c.KubeController.completed_cluster_max_age = 600
c.KubeController.completed_cluster_cleanup_period = 60

# --- clusters: the user's stack image, stackhub's pod hardening, the limits ---------------------
fraction = float(S["guaranteeFraction"])
c.KubeClusterConfig.namespace = S["namespace"]
c.KubeClusterConfig.image = S["defaultImage"]
c.KubeClusterConfig.image_pull_policy = S["imagePullPolicy"]
# distributed 2026 has only the `dask` command (no dask-scheduler / dask-worker scripts)
c.KubeClusterConfig.scheduler_cmd = ["dask", "scheduler"]
c.KubeClusterConfig.worker_cmd = ["dask", "worker"]
c.KubeClusterConfig.scheduler_cores_limit = float(G["schedulerCores"])
c.KubeClusterConfig.scheduler_cores = round(float(G["schedulerCores"]) * fraction, 3)
c.KubeClusterConfig.scheduler_memory_limit = memory_bytes(G["schedulerMemory"])
c.KubeClusterConfig.scheduler_memory = int(memory_bytes(G["schedulerMemory"]) * fraction)
c.KubeClusterConfig.cluster_max_cores = float(G["maxCores"])
c.KubeClusterConfig.cluster_max_memory = memory_bytes(G["maxMemory"])
c.KubeClusterConfig.cluster_max_workers = int(G["maxWorkers"])
c.KubeClusterConfig.idle_timeout = float(G["idleTimeout"])
uid = int(S["uid"])
container_config = {
    "securityContext": {
        "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
        "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    },
}
# the data mounts of users' servers (volumes.data), read-only, so work reads /data on workers too
volumes, mounts = [], []
for i, m in enumerate(S["dataMounts"]):
    source = m["source"]
    volumes.append({"name": f"data-{i}", **({"hostPath": {"path": source}} if source.startswith("/") else
                                            {"persistentVolumeClaim": {"claimName": source, "readOnly": True}})})
    mounts.append({"name": f"data-{i}", "mountPath": m["target"], "readOnly": True})
container_config["volumeMounts"] = mounts
pod_config = {"enableServiceLinks": False, "securityContext": {"runAsNonRoot": True, "fsGroup": uid},
              "volumes": volumes}
labels = {"stackhub.deployment": S["prefix"], "stackhub.role": "dask"}
for part in ("scheduler", "worker"):
    setattr(c.KubeClusterConfig, f"{part}_extra_container_config", container_config)
    setattr(c.KubeClusterConfig, f"{part}_extra_pod_config", pod_config)
    setattr(c.KubeClusterConfig, f"{part}_extra_pod_labels", labels)

IMAGE = re.compile(re.escape(S["repository"]) + r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def options_handler(options, user):
    """The cluster options a user may set: the image (a tag of stack.repository: the server's own
    by default, DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE) and a worker's cores and memory, bounded."""
    if not IMAGE.fullmatch(options.image):
        raise ValueError(f"image {options.image!r} is not a stack image: expected {S['repository']}:<tag>")
    cores = float(options.worker_cores)
    memory = int(float(options.worker_memory_gib) * GIB)
    if memory > memory_bytes(G["maxWorkerMemory"]) or memory < 256 * 2**20:
        raise ValueError(f"worker_memory_gib must be between 0.25 and {memory_bytes(G['maxWorkerMemory']) / GIB:g}")
    return {
        "image": options.image,
        "worker_cores_limit": cores,
        "worker_cores": round(cores * fraction, 3),
        "worker_memory_limit": memory,
        "worker_memory": int(memory * fraction),
        "worker_threads": max(1, int(cores)),
    }


c.Backend.cluster_options = Options(
    String("image", default=S["defaultImage"], label="Stack image"),
    Float("worker_cores", default=float(G["workerCores"]), min=0.1, max=float(G["maxWorkerCores"]),
          label="Worker cores"),
    Float("worker_memory_gib", default=memory_bytes(G["workerMemory"]) / GIB, min=0.25,
          max=memory_bytes(G["maxWorkerMemory"]) / GIB, label="Worker memory (GiB)"),
    handler=options_handler,
)
