"""The Helm chart on a real cluster: the single-node Kubernetes of scripts/k8s-node.sh.

    sudo .venv/bin/python -m pytest -m k8s tests/integration/test_k8s_helm.py

`helm install` of helm/stackhub with this checkout's hub image and the stack images (loaded into
the node: no registry), the tag catalog ConfigMap from `stackhub images catalog`; then, in order:
a login with the room code, a spawn with a tag, a kernel importing lsst.daf.butler through the
proxy, the home kept across a tag change, /data read-only, the NetworkPolicies in the cluster,
`helm upgrade` with a changed value (the hub restarts, the server and its home stay), and
`helm uninstall` (the homes stay). The tests of this module run in order and share one release.

Least privilege, tried for real: users' pods run in their own namespace (<release namespace>-users)
where the API server's Pod Security admission refuses a privileged or hostPath pod; the hub's
ServiceAccount creates and execs pods there only; no ServiceAccount of dask-gateway (Traefik, the
gateway, its controller) reads the hub's Secret (`kubectl auth can-i`, and the requests themselves,
impersonating each ServiceAccount).

NetworkPolicies: the node enforces them with kube-network-policies (scripts/k8s-node.sh; not
with STACKHUB_K8S_NETPOL=0, then the enforcement tests skip); the rendered rules are also tested
in tests/unit/test_helm.py.
"""

import base64
import json
import time
import uuid

import pytest
import requests
import websocket

from spawner.build.images import GATEWAY_REPO, gateway_version
from spawner.core.names import DASK_GATEWAY_WEB_PORT, Deployment
from spawner.deploy.helm import CHART

from .hubfixture import checkout_hub_image
from .k8snode import ROOT, SCRIPT, run

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

NS = "stackhub-khtest"
UNS = f"{NS}-users"  # the users' namespace (the chart's default name)
RELEASE = "khtest"
PREFIX = "khtest"  # tests/unit/helm/node.yaml
VALUES = ROOT / "tests" / "unit" / "helm" / "node.yaml"
TAGS = ("w_2026_43", "w_2026_42")
USER = "kada"
OWN = Deployment(PREFIX)


def kubectl(env, *args, check=True, timeout=300, input=None):
    return run("kubectl", "-n", NS, *args, env=env, check=check, timeout=timeout, input=input)


def kjson(env, *args):
    return json.loads(kubectl(env, *args, "-o", "json").stdout)


def ukubectl(env, *args, check=True, timeout=300, input=None):
    """kubectl in the users' namespace (servers, dask clusters)."""
    return run("kubectl", "-n", UNS, *args, env=env, check=check, timeout=timeout, input=input)


def ukjson(env, *args):
    return json.loads(ukubectl(env, *args, "-o", "json").stdout)


def remove_release_leftovers(env):
    """The namespaces and the chart's kept volumes (helm.sh/resource-policy: keep) of an earlier run."""
    for ns in (NS, UNS):
        run("kubectl", "delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=180s", env=env,
            check=False, timeout=240)
    run("kubectl", "delete", "pv", "-l", f"stackhub.deployment={PREFIX}", "--ignore-not-found", "--wait=true",
        env=env, check=False)


def helm(env, *args, timeout=600):
    return run("helm", "-n", NS, *args, env=env, timeout=timeout)


def plain_http(session):
    """The hub marks its cookies Secure (TLS ends at the Ingress on a real cluster); here the test
    talks plain HTTP to the proxy's NodePort, so let the session send them anyway."""
    for cookie in session.cookies:
        cookie.secure = False


class Deployed(dict):
    """The test release's facts; its repr (in pytest's failure reports) leaves the secrets out."""

    def __repr__(self):
        return repr({k: ("<secret>" if k in ("token", "room_code") else v) for k, v in self.items() if k != "env"})


@pytest.fixture(scope="module")
def cluster(docker_client, k8s_node):
    env = k8s_node
    hub_image = checkout_hub_image(docker_client)
    gateway_image = f"{GATEWAY_REPO}:{gateway_version()}"  # node.yaml: spawner.backend.daskGateway.image
    if not docker_client.images.list(name=gateway_image):
        pytest.fail(f"no {gateway_image}: `make gateway-image` builds it")
    t = time.monotonic()
    run(SCRIPT, "load", hub_image, gateway_image, *[f"stackhub/lsst-stack:{tag}" for tag in TAGS], timeout=1200)
    print(f"images loaded in {time.monotonic() - t:.0f} s")
    remove_release_leftovers(env)
    run("kubectl", "create", "namespace", NS, env=env)
    catalog = run(ROOT / ".venv" / "bin" / "python", "-m", "spawner.cli.main", "images", "catalog", "--prefix", PREFIX)
    kubectl(env, "apply", "-f", "-", input=catalog.stdout)
    t = time.monotonic()
    helm(env, "install", RELEASE, CHART, "-f", VALUES, "--set", f"hub.image={hub_image}",
         "--wait", "--timeout", "300s")
    print(f"helm install --wait: {time.monotonic() - t:.0f} s")
    seed_data(env)
    port = kjson(env, "get", "service", OWN.proxy)["spec"]["ports"][0]["nodePort"]
    secret = kjson(env, "get", "secret", OWN.hub_secrets)["data"]
    c = Deployed({"env": env, "url": f"http://10.244.0.1:{port}", "image": hub_image,
         "token": base64.b64decode(secret["admin-token"]).decode().strip(),
         "room_code": base64.b64decode(secret["shared-password"]).decode().strip()})
    try:
        wait_for_hub(c)
        yield c
    finally:
        for ns in (NS, UNS):
            out = run("kubectl", "-n", ns, "get", "pods,pvc,events", "--sort-by=.metadata.creationTimestamp",
                      env=env, check=False)
            print(out.stdout[-4000:])
        run("helm", "-n", NS, "uninstall", RELEASE, "--wait", env=env, check=False)
        remove_release_leftovers(env)


def seed_data(env):
    """Put the tutorial's data in the data claim, readable by all (the operator's step; a new
    host-path claim is root's, 0750)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seed-data"},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "containers": [{"name": "seed", "image": f"stackhub/lsst-stack:{TAGS[0]}", "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", "echo tutorial data > /data/README.txt && chmod 0755 /data"],
                                    "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "stackhub-data"}}]}}
    ukubectl(env, "apply", "-f", "-", input=json.dumps(pod))
    ukubectl(env, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/seed-data", "--timeout=120s")
    ukubectl(env, "delete", "pod", "seed-data", "--wait=false")


def wait_for_hub(c, timeout=120):
    """The hub's API through the proxy (`helm --wait` only knows the pods' readiness)."""
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            status = requests.get(f"{c['url']}/hub/api/", timeout=5).status_code
            if status == 200:
                return
        except requests.RequestException as e:
            status = e
        time.sleep(1)
    logs = run("kubectl", "-n", NS, "logs", f"deployment/{OWN.hub}", "--tail=60", env=c["env"], check=False)
    pytest.fail(f"the hub does not answer through the proxy ({status}):\n{logs.stdout}{logs.stderr}")


def login(c, user, password, room_code=False):
    """A browser session logged in to the hub (a new name claimed with the room code)."""
    s = requests.Session()
    s.get(f"{c['url']}/hub/login", timeout=30)
    plain_http(s)
    data = {"username": user, "password": password, "_xsrf": s.cookies.get("_xsrf")}
    if room_code:  # a claim: the room code, and the password twice
        data.update(otp=c["room_code"], password2=password)
    r = s.post(f"{c['url']}/hub/login", timeout=30, allow_redirects=False, data=data)
    assert r.status_code == 302 and "/hub/login" not in r.headers["location"], (r.status_code, r.text[-500:])
    plain_http(s)
    return s


def browse(c, s, path, hops=8):
    """GET, following redirects by hand: the hub's and the gateway's cookies are Secure, and the
    test talks plain HTTP to the NodePort (plain_http after each answer)."""
    url = f"{c['url']}{path}"
    for _ in range(hops):
        r = s.get(url, allow_redirects=False, timeout=30)
        plain_http(s)
        if r.status_code not in (301, 302, 303, 307):
            return r
        location = r.headers["location"]
        url = location if location.startswith("http") else f"{c['url']}{location}"
    pytest.fail(f"more than {hops} redirects from {path}")


def api(c, method, path, **kw):
    return requests.request(method, f"{c['url']}/hub/api{path}", headers={"Authorization": f"token {c['token']}"},
                            timeout=30, **kw)


def wait_ready(c, user, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = api(c, "GET", f"/users/{user}").json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return model
        time.sleep(0.5)
    pytest.fail(f"{user}'s server not ready in {timeout} s: {model}")


def wait_stopped(c, user, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not api(c, "GET", f"/users/{user}").json().get("servers"):
            return
        time.sleep(0.5)
    pytest.fail(f"{user}'s server did not stop in {timeout} s")


def pod_of(c, user=USER):
    return ukjson(c["env"], "get", "pod", OWN.server(user).lower())


def in_pod(c, script, user=USER, check=True):
    return ukubectl(c["env"], "exec", OWN.server(user).lower(), "-c", "notebook", "--", "sh", "-c", script, check=check)


def user_token(c, user) -> str:
    """A short-lived token of ``user``'s own: the chart runs the shared origin, where the admin
    token (``stackhub-operator``) may make one but opens no user's server itself (core.roles)."""
    r = api(c, "POST", f"/users/{user}/tokens", json={"expires_in": 900, "note": "k8s test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def run_in_kernel(c, user, code, timeout=120):
    """Start a kernel through the proxy, as ``user``, run ``code``, return its stdout."""
    token = user_token(c, user)
    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{c['url']}/user/{user}/api/kernels", headers=headers, json={}, timeout=60)
    assert r.status_code == 201, r.text
    kernel = r.json()
    assert kernel["name"] == "lsst", kernel  # the LSST kernel is the default
    ws = websocket.create_connection(
        f"{c['url'].replace('http', 'ws', 1)}/user/{user}/api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {token}"], timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    out, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                pytest.fail(f"kernel error: {msg['content']['ename']}: {msg['content']['evalue']}")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()
        requests.delete(f"{c['url']}/user/{user}/api/kernels/{kernel['id']}", headers=headers, timeout=30)
    pytest.fail(f"no answer from the kernel in {timeout} s")


def test_hub_and_proxy_answer_through_the_proxy_service(cluster):
    r = requests.get(f"{cluster['url']}/hub/api/", timeout=30)
    assert r.status_code == 200 and "version" in r.json()
    hub = kjson(cluster["env"], "get", "deployment", OWN.hub)
    assert hub["status"].get("readyReplicas") == 1


def test_login_with_the_room_code_claims_a_name(cluster):
    s = requests.Session()
    s.get(f"{cluster['url']}/hub/login", timeout=30)
    plain_http(s)
    r = s.post(f"{cluster['url']}/hub/login", timeout=30, allow_redirects=False,
               data={"username": USER, "password": "a-password-of-my-own", "otp": cluster["room_code"],
                     "password2": "a-password-of-my-own", "_xsrf": s.cookies.get("_xsrf")})
    assert r.status_code == 302 and "/hub/login" not in r.headers["location"], (r.status_code, r.headers)
    plain_http(s)
    me = s.get(f"{cluster['url']}/hub/api/user", timeout=30, headers={"X-XSRFToken": s.cookies.get("_xsrf")})
    assert me.json()["name"] == USER, me.text
    # the spawn form lists the tags of the catalog ConfigMap
    form = s.get(f"{cluster['url']}/hub/spawn", timeout=60).text
    assert all(tag in form for tag in TAGS), form[:2000]
    # the room code admits a new name only: the claimed name opens with its own password now
    s2 = requests.Session()
    s2.get(f"{cluster['url']}/hub/login", timeout=30)
    plain_http(s2)
    r = s2.post(f"{cluster['url']}/hub/login", timeout=30, allow_redirects=False,
                data={"username": USER, "password": "another-password", "otp": cluster["room_code"],
                      "_xsrf": s2.cookies.get("_xsrf")})
    assert r.status_code != 302 or "/hub/login" in r.headers.get("location", "")


def test_an_unknown_tag_is_refused_before_any_pod_exists(cluster):
    r = api(cluster, "POST", f"/users/{USER}/server", json={"image_tag": "w_1999_01"})
    assert r.status_code == 400 and "allowed" in r.json()["message"]
    assert ukubectl(cluster["env"], "get", "pod", OWN.server(USER).lower(), check=False).returncode != 0


def test_spawn_with_a_tag_and_a_kernel_imports_the_butler_through_the_proxy(cluster):
    t = time.monotonic()
    r = api(cluster, "POST", f"/users/{USER}/server", json={"image_tag": TAGS[0], "size": "small"})
    assert r.status_code in (201, 202), r.text
    wait_ready(cluster, USER)
    print(f"spawn through the hub API: {time.monotonic() - t:.1f} s")
    pod = pod_of(cluster)
    (c,) = pod["spec"]["containers"]
    assert c["image"] == f"stackhub/lsst-stack:{TAGS[0]}"
    assert c["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    out = run_in_kernel(cluster, USER, "import os, lsst.daf.butler as b\nprint('butler', b.__name__, os.getuid())")
    assert "butler lsst.daf.butler 1000" in out, out


def test_the_server_has_no_kubernetes_credentials_and_data_is_read_only(cluster):
    out = in_pod(cluster, "ls /var/run/secrets/kubernetes.io 2>&1; id -u", check=False).stdout
    assert "No such file" in out and out.strip().endswith("1000"), out
    assert in_pod(cluster, "cat /data/README.txt").stdout.strip() == "tutorial data"
    mounts = {line.split()[1]: line.split()[3].split(",") for line in in_pod(cluster, "cat /proc/mounts").stdout.splitlines()}
    assert "ro" in mounts["/data"] and "ro" in mounts["/opt/stackhub/courses"] and "rw" in mounts["/home"]
    p = in_pod(cluster, "touch /data/written-by-user", check=False)
    assert p.returncode != 0, p.stderr
    p = in_pod(cluster, "touch /opt/stackhub/courses/x", check=False)
    assert p.returncode != 0


def test_the_home_survives_a_tag_change(cluster):
    in_pod(cluster, f"echo kept > /home/{USER}/persist.txt")
    home_claim = pod_of(cluster)["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert api(cluster, "DELETE", f"/users/{USER}/server").status_code in (202, 204)
    wait_stopped(cluster, USER)
    assert ukjson(cluster["env"], "get", "pvc", home_claim)["status"]["phase"] == "Bound"
    r = api(cluster, "POST", f"/users/{USER}/server", json={"image_tag": TAGS[1]})
    assert r.status_code in (201, 202), r.text
    wait_ready(cluster, USER)
    assert pod_of(cluster)["spec"]["containers"][0]["image"] == f"stackhub/lsst-stack:{TAGS[1]}"
    assert in_pod(cluster, f"cat /home/{USER}/persist.txt").stdout.strip() == "kept"


def test_the_services_engine_finds_the_server_and_execs_as_its_user(cluster, monkeypatch):
    """KubeEngine, what the hub's services (courses sync, sessions) use, against the real API."""
    from spawner.backends.base import EngineError
    from spawner.backends.kubernetes.engine import KubeEngine
    from spawner.core.config import StackhubConfig

    monkeypatch.setenv("KUBECONFIG", cluster["env"]["KUBECONFIG"])
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    engine = KubeEngine(StackhubConfig.model_validate({"hub": {"prefix": PREFIX}, "spawner": {"backend": {"type": "kubernetes"}}}),
                        namespace=UNS, catalog_namespace=NS)
    found = engine.running_servers()
    assert list(found) == [USER] and found[USER].name == OWN.server(USER).lower()
    assert engine.server(USER, "").name == found[USER].name and engine.server("nobody", "") is None
    result = engine.exec(found[USER], ["sh", "-c", "id -u; echo $GREETING; exit 3"], user="1000",
                         environment={"GREETING": "hello"})
    assert (result.code, result.stdout.split()) == (3, [b"1000", b"hello"])
    with pytest.raises(EngineError):
        engine.exec(found[USER], ["id"], user="0")
    assert {e["RepoTags"][0] for e in engine.list_images()} >= {f"stackhub/lsst-stack:{t}" for t in TAGS}


def test_the_idle_culler_and_the_prepuller_run(cluster):
    services = api(cluster, "GET", "/services").json()
    assert "idle-culler" in services and "stackhub-sessions" in services
    ds = kjson(cluster["env"], "get", "daemonset", f"{PREFIX}-prepuller")
    assert ds["status"].get("numberReady") == 1, ds["status"]
    images = [c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]]
    assert images == [f"stackhub/lsst-stack:{TAGS[1]}", f"stackhub/lsst-stack:{TAGS[0]}"]


def test_network_policies_are_in_the_cluster(cluster):
    """Accepted by the API server; the node's bridge CNI does not enforce them (see the module
    docstring: the rendered rules are tested in tests/unit/test_helm.py)."""
    found = {p["metadata"]["name"] for p in kjson(cluster["env"], "get", "networkpolicies")["items"]}
    users = {p["metadata"]["name"] for p in ukjson(cluster["env"], "get", "networkpolicies")["items"]}
    gateway = OWN.dask_gateway
    assert found == {f"{PREFIX}-hub", f"{PREFIX}-proxy", gateway, f"{gateway}-to-hub"}
    assert users == {f"{PREFIX}-users", f"{gateway}-users", f"{OWN.dask_gateway_traefik}", f"{gateway}-clusters"}


# --- least privilege: the users' namespace, Pod Security, RBAC ------------------------------------

def sa(namespace, name):
    return f"system:serviceaccount:{namespace}:{name}"


def can_i(env, who, verb, resource, namespace, name=None):
    """`kubectl auth can-i` as ServiceAccount ``who``: True, False (an unexpected answer fails).
    ``pods/exec`` is the subresource (kubectl reads TYPE/NAME otherwise)."""
    resource, _, sub = resource.partition("/")
    args = ["kubectl", "auth", "can-i", verb, resource if name is None else f"{resource}/{name}", "-n", namespace,
            "--as", who] + ([f"--subresource={sub}"] if sub else [])
    out = run(*args, env=env, check=False).stdout.strip()
    assert out in ("yes", "no"), (args, out)
    return out == "yes"


def a_pod(name, **container_extra):
    security = {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    security.update(container_extra.pop("securityContext", {}))
    volumes = container_extra.pop("volumes", [])
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"automountServiceAccountToken": False, "volumes": volumes,
                 "containers": [{"name": "c", "image": f"stackhub/lsst-stack:{TAGS[0]}", "imagePullPolicy": "Never",
                                 "command": ["sleep", "60"], "securityContext": security, **container_extra}]}})


def create_pod(env, namespace, pod, as_=None):
    """kubectl create --dry-run=server (every admission step runs; nothing stays)."""
    args = ["kubectl", "-n", namespace, "create", "--dry-run=server", "-f", "-"] + (["--as", as_] if as_ else [])
    return run(*args, env=env, input=pod, check=False)


def test_the_users_namespace_refuses_privileged_and_host_path_pods(cluster):
    """Pod Security admission (baseline enforced, restricted warned) on the users' namespace: the
    API server itself refuses the pods, even the cluster admin's."""
    env = cluster["env"]
    labels = json.loads(run("kubectl", "get", "namespace", UNS, "-o", "json", env=env).stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    ok = create_pod(env, UNS, a_pod("plain"))
    assert ok.returncode == 0, ok.stderr
    # privileged: refused (this node's apiserver allows no privileged pod at all, as
    # --allow-privileged defaults to false; Pod Security refuses it where a cluster allows them)
    privileged = create_pod(env, UNS, a_pod("privileged", securityContext={
        "privileged": True, "allowPrivilegeEscalation": True, "runAsNonRoot": False, "runAsUser": 0}))
    assert privileged.returncode != 0 and ("violates PodSecurity" in privileged.stderr
                                           or "disallowed by cluster policy" in privileged.stderr), privileged.stderr
    host_path = {"volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                 "volumeMounts": [{"name": "root", "mountPath": "/host"}]}
    escalating = [a_pod("host", **host_path),
                  a_pod("sysadmin", securityContext={"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}})]
    for pod in escalating:
        p = create_pod(env, UNS, pod)
        assert p.returncode != 0 and "violates PodSecurity" in p.stderr, p.stderr
    assert "hostPath" in create_pod(env, UNS, escalating[0]).stderr
    # the same pods pass in a namespace without the labels: the refusal is the users' namespace's
    for pod in escalating:
        p = create_pod(env, NS, pod)
        assert p.returncode == 0, p.stderr
    # the users' pods themselves run there, and pass
    assert pod_of(cluster)["metadata"]["namespace"] == UNS


def test_the_hubs_service_account_creates_and_execs_pods_only_in_the_users_namespace(cluster):
    env, hub = cluster["env"], sa(NS, OWN.service_account)
    for verb, resource in [("create", "pods"), ("create", "pods/exec"), ("delete", "pods"),
                           ("create", "persistentvolumeclaims")]:
        assert can_i(env, hub, verb, resource, UNS), (verb, resource)
        assert not can_i(env, hub, verb, resource, NS), (verb, resource)
        assert not can_i(env, hub, verb, resource, "default"), (verb, resource)
    assert not can_i(env, hub, "delete", "persistentvolumeclaims", UNS)  # homes outlive servers
    for namespace in (NS, UNS):
        assert not can_i(env, hub, "get", "secrets", namespace)
        assert not can_i(env, hub, "list", "secrets", namespace)
    assert can_i(env, hub, "get", "configmaps", NS, OWN.catalog_configmap)
    assert not can_i(env, hub, "get", "configmaps", NS, OWN.hub_config)
    # and tried: a pod in the hub's namespace is forbidden, in the users' it passes admission
    p = create_pod(env, NS, a_pod("as-hub"), as_=hub)
    assert p.returncode != 0 and "forbidden" in p.stderr.lower(), p.stderr
    p = create_pod(env, UNS, a_pod("as-hub"), as_=hub)
    assert p.returncode == 0, p.stderr
    p = create_pod(env, UNS, a_pod("as-hub-host", volumes=[{"name": "root", "hostPath": {"path": "/"}}],
                                   volumeMounts=[{"name": "root", "mountPath": "/host"}]), as_=hub)
    assert p.returncode != 0 and "violates PodSecurity" in p.stderr, p.stderr
    p = run("kubectl", "-n", NS, "get", "secret", OWN.hub_secrets, "--as", hub, env=env, check=False)
    assert p.returncode != 0 and "forbidden" in p.stderr.lower(), p.stderr


def test_no_dask_gateway_service_account_reads_the_hubs_secret(cluster):
    """Traefik's provider lists Secrets, the gateway reads its clusters' TLS Secrets: in the users'
    namespace only. The hub's Secret (room code, admin password, tokens) is in the hub's."""
    env = cluster["env"]
    accounts = [sa(NS, OWN.dask_gateway), sa(NS, OWN.dask_gateway_controller), sa(UNS, OWN.dask_gateway_traefik)]
    for who in accounts:
        for verb in ("get", "list", "watch"):
            assert not can_i(env, who, verb, "secrets", NS), (who, verb)
        p = run("kubectl", "-n", NS, "get", "secret", OWN.hub_secrets, "--as", who, env=env, check=False)
        assert p.returncode != 0 and "forbidden" in p.stderr.lower(), (who, p.stderr)
        p = run("kubectl", "-n", NS, "get", "secrets", "--as", who, env=env, check=False)
        assert p.returncode != 0 and "forbidden" in p.stderr.lower(), (who, p.stderr)
        assert not can_i(env, who, "create", "pods", NS) and not can_i(env, who, "create", "pods/exec", NS)
    # what each needs, where its clusters are
    assert can_i(env, sa(UNS, OWN.dask_gateway_traefik), "list", "secrets", UNS)
    assert can_i(env, sa(NS, OWN.dask_gateway), "get", "secrets", UNS)
    assert can_i(env, sa(NS, OWN.dask_gateway_controller), "create", "pods", UNS)
    assert not can_i(env, sa(NS, OWN.dask_gateway_controller), "create", "pods/exec", UNS)


# --- dask-gateway (node.yaml: spawner.backend.daskGateway.enabled) ---------------------------------

GATEWAY_START = """
import json, time
import dask.array as da
from dask_gateway import Gateway
t = time.monotonic()
gateway = Gateway()
cluster = gateway.new_cluster(shutdown_on_close=False)
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=300)
started = time.monotonic() - t
x = da.ones((2000, 2000), chunks=(500, 500))
# Traefik drops the client's TCP connection when it reloads its routes, which it may do while the
# new cluster settles (seen once here): the client reconnects by itself, a cancelled compute is
# run again
for attempt in (1, 2, 3):
    try:
        total = float((x + 1).sum().compute())
        break
    except Exception as e:
        if attempt == 3 or "connection" not in str(e).lower():
            raise
        print("compute retried after:", type(e).__name__, str(e)[:200], flush=True)
        time.sleep(3)
data = client.submit(lambda: open("/data/README.txt").read().strip(), pure=False).result()
print(json.dumps({"name": cluster.name, "sum": total, "workers": len(client.scheduler_info()["workers"]), "data": data,
                  "started": round(started, 1), "attempts": attempt, "options": dict(gateway.cluster_options())}))
client.close()
"""

GATEWAY_OTHER = """
import json, sys
from dask_gateway import Gateway
gateway = Gateway()
seen = [c.name for c in gateway.list_clusters()]
try:
    gateway.connect(sys.argv[1])
    connected = True
except Exception as e:
    connected = type(e).__name__ + ": " + str(e)[:200]
print(json.dumps({"seen": seen, "connected": connected}))
"""

GATEWAY_STOP = """
import sys, time
from dask_gateway import Gateway
gateway = Gateway()
gateway.stop_cluster(sys.argv[1])
deadline = time.monotonic() + 90
while [c.name for c in gateway.list_clusters()] and time.monotonic() < deadline:
    time.sleep(1)
print("stopped", [c.name for c in gateway.list_clusters()])
"""


def gateway_python(c, script, *args, token=None, timeout=420):
    """Run a python script in the user's server as its user, with the server's environment (the
    DASK_GATEWAY__* settings) and, if given, another JupyterHub token."""
    env = f"JUPYTERHUB_API_TOKEN={token} " if token else ""
    return ukubectl(c["env"], "exec", "-i", OWN.server(USER).lower(), "-c", "notebook", "--", "sh", "-c",
                   f'{env}exec python - {" ".join(args)}', input=script, timeout=timeout, check=False)


def last_json(p):
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[:3000]}\n...\n{p.stderr[-1500:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_dask_gateway_runs_as_a_hub_service(cluster):
    env = cluster["env"]
    for name in (OWN.dask_gateway, OWN.dask_gateway_controller):
        kubectl(env, "rollout", "status", f"deployment/{name}", "--timeout=180s", timeout=200)
    ukubectl(env, "rollout", "status", f"deployment/{OWN.dask_gateway_traefik}", "--timeout=180s", timeout=200)
    assert "dask-gateway" in api(cluster, "GET", "/services").json()
    # the gateway's API through the hub's proxy (/services/dask-gateway/ -> Traefik -> the gateway)
    r = requests.get(f"{cluster['url']}/services/dask-gateway/api/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "pass", r.text


def test_a_user_runs_a_gateway_cluster_of_their_stack_image(cluster):
    """Gateway().new_cluster() in the user's server: a scheduler and two workers of the server's own
    image, a dask.array sum on them; the cluster's dashboard through the hub."""
    image = pod_of(cluster)["spec"]["containers"][0]["image"]
    t = time.monotonic()
    out = last_json(gateway_python(cluster, GATEWAY_START))
    print(f"gateway cluster with 2 workers in {out['started']} s; whole script {time.monotonic() - t:.0f} s; "
          f"compute attempts {out['attempts']}")
    assert out["sum"] == 2 * 2000 * 2000 and out["workers"] == 2, out
    assert out["data"] == "tutorial data", out  # the servers' data mount, on the workers too
    assert out["options"]["image"] == image, out
    cluster["dask_cluster"] = name = out["name"]
    pods = ukjson(cluster["env"], "get", "pods", "-l", f"gateway.dask.org/cluster={name.split('.', 1)[1]}")["items"]
    roles = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    assert roles == ["dask-scheduler", "dask-worker", "dask-worker"], roles
    for p in pods:
        (ct,) = p["spec"]["containers"]
        assert ct["image"] == image and ct["securityContext"]["runAsUser"] == 1000, ct
        assert p["metadata"]["labels"]["stackhub.role"] == "dask" and p["spec"]["automountServiceAccountToken"] is False
    # the dashboard through the hub, for its owner only: a browser without a session goes to the
    # hub's OAuth, the owner's logged-in browser comes back to the dashboard
    dashboard = f"/services/dask-gateway/clusters/{name}/status"
    r = requests.get(f"{cluster['url']}{dashboard}", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["location"].startswith("/hub/api/oauth2/authorize?"), (
        r.status_code, r.headers)
    r = browse(cluster, login(cluster, USER, "a-password-of-my-own"), dashboard)
    assert r.status_code == 200 and "Dask" in r.text, (r.status_code, r.text[:500])


def test_another_user_neither_sees_nor_connects_to_the_cluster(cluster):
    name = cluster.get("dask_cluster") or pytest.skip("no cluster from the previous test")
    other = "kother"
    api(cluster, "POST", f"/users/{other}")
    scopes = ["access:services!service=dask-gateway"]
    r = api(cluster, "POST", f"/users/{other}/tokens", json={"scopes": scopes, "expires_in": 900})
    assert r.status_code == 201, r.text
    out = last_json(gateway_python(cluster, GATEWAY_OTHER, name, token=r.json()["token"], timeout=120))
    assert out["seen"] == [] and out["connected"] is not True, out
    # nor opens its dashboard, logged in to the hub as themselves
    r = browse(cluster, login(cluster, "kbrowser", "a-browser-password", room_code=True),
               f"/services/dask-gateway/clusters/{name}/status")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    # a token of the same user without access to the service is refused outright
    r = api(cluster, "POST", f"/users/{other}/tokens", json={"scopes": ["read:users:name!user"], "expires_in": 900})
    p = gateway_python(cluster, GATEWAY_OTHER, name, token=r.json()["token"], timeout=120)
    assert p.returncode != 0 and ("401" in p.stderr or "Unauthorized" in p.stderr), p.stderr[-2000:]


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("open")
except OSError as e:
    print("closed", type(e).__name__)
"""


def connects(c, pod, host, port, container=None):
    """A TCP connection from ``pod`` (users' namespace) to host:port: True when it opens."""
    args = ["exec", pod] + (["-c", container] if container else []) + ["--", "python", "-c", CONNECT, host, str(port)]
    out = ukubectl(c["env"], *args, check=False, timeout=60)
    assert out.stdout.strip().startswith(("open", "closed")), (out.stdout, out.stderr[-1500:])
    return out.stdout.strip() == "open"


def policies_enforced():
    """kube-network-policies runs and has its nftables table (scripts/k8s-node.sh)."""
    return run("nft", "list", "table", "inet", "kube-network-policies", check=False).returncode == 0


def test_policies_are_enforced_users_server_reaches_the_hub_not_the_proxy_api(cluster):
    if not policies_enforced():
        pytest.skip("the node does not enforce NetworkPolicies (STACKHUB_K8S_NETPOL=0)")
    server = OWN.server(USER).lower()
    assert connects(cluster, server, f"{OWN.hub}.{NS}.svc", 8081, "notebook")
    assert connects(cluster, server, OWN.dask_gateway_traefik, DASK_GATEWAY_WEB_PORT, "notebook")
    assert not connects(cluster, server, f"{OWN.proxy_api}.{NS}.svc", 8001, "notebook")
    assert not connects(cluster, server, f"{OWN.dask_gateway}.{NS}.svc", 8000, "notebook")  # only through Traefik


def test_a_users_dask_pods_take_traffic_from_their_own_cluster_only(cluster):
    """Each cluster's own NetworkPolicy (made by the gateway's controller): its scheduler is reached
    by its workers (and Traefik), never by another cluster's pods or a user's server directly."""
    if not policies_enforced():
        pytest.skip("the node does not enforce NetworkPolicies (STACKHUB_K8S_NETPOL=0)")
    name = cluster.get("dask_cluster") or pytest.skip("no cluster from the earlier test")
    env, cid = cluster["env"], name.split(".", 1)[1]
    assert ukjson(env, "get", "networkpolicy", f"dask-{cid}")["spec"]["podSelector"]["matchLabels"][
        "gateway.dask.org/cluster"] == cid
    pods = ukjson(env, "get", "pods", "-l", f"gateway.dask.org/cluster={cid}")["items"]
    by_role = {}
    for p in pods:
        by_role.setdefault(p["metadata"]["labels"]["app.kubernetes.io/component"], []).append(p)
    scheduler_ip = by_role["dask-scheduler"][0]["status"]["podIP"]
    worker = by_role["dask-worker"][0]["metadata"]["name"]
    assert connects(cluster, worker, scheduler_ip, 8786)
    # a pod of another cluster (the labels the controller gives another user's cluster)
    labels = {"stackhub.deployment": PREFIX, "stackhub.role": "dask", "gateway.dask.org/instance": OWN.dask_gateway,
              "gateway.dask.org/cluster": "someone-elses"}
    pod = json.loads(a_pod("other-cluster"))
    pod["metadata"]["labels"] = labels
    pod["spec"]["containers"][0]["command"] = ["sleep", "300"]
    ukubectl(env, "apply", "-f", "-", input=json.dumps(pod))
    try:
        ukubectl(env, "wait", "--for=condition=Ready", "pod/other-cluster", "--timeout=120s", timeout=150)
        assert not connects(cluster, "other-cluster", scheduler_ip, 8786)
        assert not connects(cluster, "other-cluster", scheduler_ip, 8787)
    finally:
        ukubectl(env, "delete", "pod", "other-cluster", "--wait=false", check=False)
    assert not connects(cluster, OWN.server(USER).lower(), scheduler_ip, 8786, "notebook")


def test_the_user_stops_the_cluster_and_its_pods_go(cluster):
    name = cluster.get("dask_cluster") or pytest.skip("no cluster from the previous test")
    p = gateway_python(cluster, GATEWAY_STOP, name, timeout=120)
    assert p.returncode == 0 and "stopped []" in p.stdout, (p.stdout, p.stderr[-2000:])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not ukjson(cluster["env"], "get", "pods", "-l", f"gateway.dask.org/cluster={name.split('.', 1)[1]}")["items"]:
            return
        time.sleep(2)
    pytest.fail(f"the pods of {name} are still there 120 s after stop_cluster")


def test_helm_upgrade_with_a_changed_value_restarts_the_hub_and_keeps_the_server(cluster):
    env = cluster["env"]
    selector = "stackhub.role=hub,stackhub.deployment=" + PREFIX
    hub_before = kjson(env, "get", "pods", "-l", selector)["items"][0]["metadata"]["uid"]
    server_before = pod_of(cluster)["metadata"]["uid"]
    helm(env, "upgrade", RELEASE, CHART, "--reuse-values", "--set", "culler.timeout=7200", "--wait", "--timeout", "300s")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        hubs = [p for p in kjson(env, "get", "pods", "-l", selector)["items"]
                if p["metadata"]["uid"] != hub_before and p["status"].get("phase") == "Running"
                and all(cs.get("ready") for cs in p["status"].get("containerStatuses", []))]
        if hubs:
            break
        time.sleep(1)
    else:
        pytest.fail("the hub pod was not replaced after the upgrade")
    cfg = kjson(env, "get", "configmap", OWN.hub_config)["data"]["stackhub.yaml"]
    assert "timeout: 7200" in cfg
    assert pod_of(cluster)["metadata"]["uid"] == server_before
    model = wait_ready(cluster, USER, timeout=120)  # the new hub found the running server again
    assert model["servers"][""]["ready"]
    assert "kept" in run_in_kernel(cluster, USER, f"print(open('/home/{USER}/persist.txt').read())")


def test_helm_uninstall_keeps_the_homes(cluster):
    env = cluster["env"]
    assert api(cluster, "DELETE", f"/users/{USER}/server").status_code in (202, 204)
    wait_stopped(cluster, USER)
    home = OWN.server(USER).lower().replace(f"{PREFIX}-user-", "stackhub-home-")
    helm(env, "uninstall", RELEASE, "--wait")
    assert kubectl(env, "get", "deployment", OWN.hub, check=False).returncode != 0
    claims = {p["metadata"]["name"] for p in kjson(env, "get", "pvc")["items"]}
    assert {f"{PREFIX}-hub-state", "stackhub-courses"} <= claims
    claims = {p["metadata"]["name"] for p in ukjson(env, "get", "pvc")["items"]}
    assert {home, "stackhub-data", "stackhub-courses"} <= claims
