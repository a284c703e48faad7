"""The Helm chart offline: lint, `helm template` with several values files validated against the
Kubernetes 1.34 JSON schemas (the node's version), the values schema generated from the config
model, names shared with spawner/core/names.py, and one stackhub.yaml giving the same user server
on Docker and on Kubernetes.

helm is v3.22.0 from the Go module proxy: `scripts/k8s-node.sh helm` builds it once (~70 s) and
prints its path (`make test` runs it first)."""

import subprocess
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml

from spawner.core import names
from spawner.deploy.helm import CHART, SCHEMA_FILE, schema_text

ROOT = Path(__file__).resolve().parents[2]
VALUES = Path(__file__).parent / "helm"
VALUES_FILES = sorted(p.name for p in VALUES.glob("*.yaml"))
K8S_VERSION = "1.34.0"  # scripts/k8s-node.sh runs v1.34.4; the schemas are per minor version


@pytest.fixture(scope="session")
def helm():
    p = subprocess.run([ROOT / "scripts" / "k8s-node.sh", "helm"], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"no helm: `scripts/k8s-node.sh helm` failed (it builds helm v3.22.0 with Go):\n{p.stderr[-2000:]}")
    return p.stdout.strip().splitlines()[-1]


def run_helm(helm, *args, check=True):
    p = subprocess.run([helm, *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        pytest.fail(f"helm {' '.join(map(str, args))} failed:\n{p.stderr}")
    return p


def render(helm, *values_files, sets=(), values: dict | None = None, tmp_path=None, schema=True) -> list[dict]:
    args = ["template", "t", CHART, "--namespace", "stackhub"] + ([] if schema else ["--skip-schema-validation"])
    for f in values_files:
        args += ["-f", VALUES / f]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", path]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(run_helm(helm, *args).stdout) if d]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} rendered; have {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0] if name else found


def hub_config(docs, prefix="stackhub"):
    from spawner.core.config import StackhubConfig

    cm = find(docs, "ConfigMap", names.Deployment(prefix).hub_config)
    return StackhubConfig.model_validate(yaml.safe_load(cm["data"]["stackhub.yaml"]))


def test_values_schema_is_the_one_generated_from_the_config_model():
    assert SCHEMA_FILE.read_text() == schema_text(), \
        "helm/stackhub/values.schema.json is stale: `stackhub schema --helm > helm/stackhub/values.schema.json`"


def test_values_yaml_spells_out_the_chart_sections_defaults():
    """Helm does not apply a schema's defaults, so the templates see only values.yaml: its `chart`
    must be the model's defaults, key for key."""
    from spawner.deploy.helm import ChartSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def no_nulls(d):
        return {k: no_nulls(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    assert no_nulls(values["chart"]) == ChartSettings().model_dump(by_alias=True, exclude_none=True)
    # and so must the gateway's section, which the templates read too
    from spawner.core.config import DaskGateway

    assert values["spawner"]["backend"]["daskGateway"] == DaskGateway().model_dump(by_alias=True, exclude_none=True)


@pytest.mark.parametrize("values", VALUES_FILES)
def test_helm_lint(helm, values):
    out = run_helm(helm, "lint", "--strict", CHART, "-f", VALUES / values).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", VALUES_FILES)
def test_rendered_manifests_are_valid_for_kubernetes_1_34(helm, values):
    docs = render(helm, values)
    assert len(docs) >= 9
    for doc in docs:
        if doc["apiVersion"].startswith("traefik.io/"):  # a CRD's kind (crds/traefik.yaml), not in the schemas
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{values}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_the_validation_can_fail():
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": "http"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("sets, says", [
    (["hub.httpsPort=99999"], "/hub/httpsPort"),
    (["chart.ingress.bogus=1"], "'bogus' not allowed"),
    (["sizes[0].name=Big Size", "sizes[0].cpu=1", "sizes[0].memory=1G"], "/sizes/0/name"),
    # values.yaml's spawner.backend carries kubernetes-only keys (daskGateway): the schema refuses first
    (["spawner.backend.type=docker"], "'/spawner/backend/type': value must be 'kubernetes'"),
    (["chart.hubDatabase.type=external"], "chart.hubDatabase.urlSecret"),
    (["spawner.backend.namespace=stackhub"], "spawner.backend.namespace"),
    (["chart.users.podSecurity=privileged"], "/chart/users/podSecurity"),
])
def test_a_wrong_value_fails_the_install_naming_the_key(helm, sets, says):
    args = ["template", "t", CHART, "--namespace", "stackhub", "-f", VALUES / "defaults.yaml"]
    for s in sets:
        args += ["--set", s]
    p = run_helm(helm, *args, check=False)
    assert p.returncode != 0 and says in p.stderr, p.stderr


def test_the_hub_reads_the_values_through_the_config_model(helm):
    docs = render(helm, "tls-secret-oauth.yaml")
    cfg = hub_config(docs, "tut")
    assert (cfg.hub.prefix, cfg.hub.public_host, cfg.hub.https_port) == ("tut", "tutorial.example.org", 443)
    assert cfg.auth.type == "github" and cfg.auth.allowed_groups == ["rubin-tutorial"]
    kube = cfg.spawner.backend
    assert (kube.type, kube.homes.type, kube.homes.shared_claim, kube.guarantee_fraction) == \
        ("kubernetes", "shared", "tutorial-homes", 0.5)
    assert [s.name for s in cfg.sizes] == ["small", "big"]
    # the chart's own section stays out of the hub's config, and so do secrets
    text = find(docs, "ConfigMap", "tut-config")["data"]["stackhub.yaml"]
    assert "chart" not in yaml.safe_load(text) and "token" not in text.lower()


def test_names_agree_with_names_py(helm):
    docs = render(helm, "tls-secret-oauth.yaml")
    own = names.Deployment("tut")
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", own.hub), ("Service", own.hub), ("Deployment", own.proxy), ("Service", own.proxy),
            ("Service", own.proxy_api), ("ConfigMap", own.hub_config), ("Secret", own.hub_secrets),
            ("ServiceAccount", own.service_account)} <= rendered
    (cm_rule,) = find(docs, "Role", f"{own.service_account}-catalog")["rules"]
    assert cm_rule["resourceNames"] == [own.catalog_configmap] and cm_rule["verbs"] == ["get"]
    hub = find(docs, "Deployment", own.hub)["spec"]["template"]["spec"]
    assert hub["serviceAccountName"] == own.service_account


def test_rbac_is_namespaced_and_only_what_the_hub_needs(helm):
    """Pods, exec, claims and events in the users' namespace only; in its own, the catalog by name."""
    docs = render(helm, "defaults.yaml")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = find(docs, "Role", "stackhub-hub")
    assert role["metadata"]["namespace"] == "stackhub-users"
    rules = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert set(rules) == {"pods", "pods/exec", "persistentvolumeclaims", "events"}
    assert "delete" not in rules["persistentvolumeclaims"]  # homes outlive servers
    assert not {"secrets", "nodes", "*"} & set(rules)
    binding = find(docs, "RoleBinding", "stackhub-hub")
    assert binding["metadata"]["namespace"] == "stackhub-users"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "stackhub-hub", "namespace": "stackhub"}]
    catalog = find(docs, "Role", "stackhub-hub-catalog")
    assert "namespace" not in catalog["metadata"]  # the release's
    assert [r["resources"] for r in catalog["rules"]] == [["configmaps"]]


def test_users_pods_run_in_their_own_namespace_under_pod_security(helm):
    docs = render(helm, "defaults.yaml")
    ns = find(docs, "Namespace", "stackhub-users")["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "baseline"
    assert ns["pod-security.kubernetes.io/warn"] == ns["pod-security.kubernetes.io/audit"] == "restricted"
    assert hub_config(docs).spawner.backend.namespace == "stackhub-users"
    # nothing of the hub's in the users' namespace: no Secret, no ServiceAccount, no ConfigMap
    there = {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"].get("namespace") == "stackhub-users"}
    assert not {k for k, _ in there} & {"Secret", "ServiceAccount", "ConfigMap", "Deployment"}, there
    docs = render(helm, "defaults.yaml", sets=["chart.users.podSecurity=restricted", "spawner.backend.namespace=labs"])
    assert find(docs, "Namespace", "labs")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not [d for d in render(helm, "defaults.yaml", sets=["chart.users.create=false"]) if d["kind"] == "Namespace"]


def test_the_courses_two_claims_share_one_volume(helm):
    """The hub writes the courses in its namespace, servers read them in theirs: two claims, each
    bound to a volume of the chart's on the same NFS directory (or node directory)."""
    docs = render(helm, "defaults.yaml")
    pvs = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PersistentVolume"}
    assert set(pvs) == {"stackhub-stackhub-courses", "stackhub-users-stackhub-courses", "stackhub-users-stackhub-data"}
    assert pvs["stackhub-stackhub-courses"]["nfs"] == pvs["stackhub-users-stackhub-courses"]["nfs"] == {
        "server": "nfs.example.org", "path": "/export/stackhub/stackhub-courses"}
    assert pvs["stackhub-stackhub-courses"]["claimRef"] == {"namespace": "stackhub", "name": "stackhub-courses"}
    assert all(pv["persistentVolumeReclaimPolicy"] == "Retain" for pv in pvs.values())
    node = [d["spec"]["hostPath"] for d in render(helm, "node.yaml") if d["kind"] == "PersistentVolume"]
    assert {"path": "/var/lib/stackhub-k8s/shared/khtest/stackhub-courses", "type": "DirectoryOrCreate"} in node


def test_a_config_change_restarts_the_hub_and_a_chart_only_change_does_not(helm):
    def checksum(*sets):
        docs = render(helm, "defaults.yaml", sets=sets)
        return find(docs, "Deployment", "stackhub-hub")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert checksum("culler.timeout=7200") != base
    assert checksum("chart.proxyService.type=NodePort") == base


def test_without_a_shared_volume_the_courses_claims_fail_the_install(helm):
    p = run_helm(helm, "template", "t", CHART, "--namespace", "stackhub", check=False)
    assert p.returncode != 0 and "chart.sharedClaims" in p.stderr, p.stderr
    assert render(helm, sets=["courses.enabled=false"])


def test_user_pods_reach_only_the_hub_dns_and_public_addresses(helm, tmp_path):
    from spawner.deploy.isolation import BLOCKED_IPV4

    users = find(render(helm, "defaults.yaml"), "NetworkPolicy", "stackhub-users")["spec"]
    assert users["podSelector"]["matchLabels"] == {names.LABEL_DEPLOYMENT: "stackhub", names.LABEL_ROLE: "server"}
    assert set(users["policyTypes"]) == {"Ingress", "Egress"}
    to_hub, dns, internet = users["egress"]
    release = {"matchLabels": {"kubernetes.io/metadata.name": "stackhub"}}
    assert to_hub["to"][0]["podSelector"]["matchLabels"][names.LABEL_ROLE] == "hub"
    assert to_hub["to"][0]["namespaceSelector"] == release
    assert to_hub["ports"] == [{"protocol": "TCP", "port": 8081}]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    block = internet["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0" and block["except"] == [c for c, _ in BLOCKED_IPV4]
    assert "169.254.0.0/16" in block["except"]  # cloud metadata
    # reached by the hub and the proxy only, on the server's port
    (ingress,) = users["ingress"]
    assert {f["podSelector"]["matchLabels"][names.LABEL_ROLE] for f in ingress["from"]} == {"hub", "proxy"}
    assert all(f["namespaceSelector"] == release for f in ingress["from"])
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8888}]

    closed = find(render(helm, "tls-secret-oauth.yaml"), "NetworkPolicy", "tut-users")["spec"]
    cidrs = [t["ipBlock"]["cidr"] for rule in closed["egress"] for t in rule.get("to", []) if "ipBlock" in t]
    assert cidrs == ["10.1.2.0/24"]  # internet: false; allowPrivateCidrs opened


def test_only_the_hub_reaches_the_proxy_api(helm):
    proxy = find(render(helm, "defaults.yaml"), "NetworkPolicy", "stackhub-proxy")["spec"]
    public, api = proxy["ingress"]
    assert public == {"ports": [{"protocol": "TCP", "port": 8000}]}
    assert api["ports"] == [{"protocol": "TCP", "port": 8001}]
    assert api["from"] == [{"podSelector": {"matchLabels": {names.LABEL_DEPLOYMENT: "stackhub", names.LABEL_ROLE: "hub"}}}]


def test_ingress_tls_from_a_secret_or_cert_manager(helm):
    ing = find(render(helm, "tls-secret-oauth.yaml"), "Ingress")[0]
    assert ing["spec"]["tls"] == [{"hosts": ["tutorial.example.org", "*.tutorial.example.org"], "secretName": "tutorial-tls"}]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "tut-proxy"
    ing = find(render(helm, "certmanager-externaldb.yaml"), "Ingress")[0]
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ing["spec"]["tls"][0]["secretName"] == "stackhub-tls"


def test_with_subdomains_the_ingress_and_its_certificate_name_the_wildcard_host(helm):
    """hub.subdomains (issue 21): the users' servers' wildcard host beside the hub's, one certificate
    for both, and the proxy routes by host; the same key the hub reads (spawner.hub.apply)."""
    docs = render(helm, "tls-secret-oauth.yaml", sets=["hub.subdomains=true"])
    ing = find(docs, "Ingress")[0]
    hosts = ["tutorial.example.org", "*.tutorial.example.org"]
    assert ing["spec"]["tls"] == [{"hosts": hosts, "secretName": "tutorial-tls"}]
    assert [r["host"] for r in ing["spec"]["rules"]] == hosts
    assert {r["http"]["paths"][0]["backend"]["service"]["name"] for r in ing["spec"]["rules"]} == {"tut-proxy"}
    assert "--host-routing" in find(docs, "Deployment", "tut-proxy")["spec"]["template"]["spec"]["containers"][0]["command"]
    ing = find(render(helm, "certmanager-externaldb.yaml", sets=["hub.subdomains=true"]), "Ingress")[0]
    assert ing["spec"]["tls"][0]["hosts"] == ["hub.example.edu", "*.hub.example.edu"]
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    docs = render(helm, "tls-secret-oauth.yaml", sets=["hub.subdomains=false"])
    assert [r["host"] for r in find(docs, "Ingress")[0]["spec"]["rules"]] == ["tutorial.example.org"]
    assert "--host-routing" not in find(docs, "Deployment", "tut-proxy")["spec"]["template"]["spec"]["containers"][0]["command"]


def test_secrets_are_generated_or_the_sites_own(helm):
    docs = render(helm, "defaults.yaml")
    secret = find(docs, "Secret", "stackhub-secrets")
    assert set(secret["data"]) == {"proxy-token", "admin-token", "admin-password", "shared-password"}
    assert len(set(secret["data"].values())) == 4
    docs = render(helm, "certmanager-externaldb.yaml")
    assert not [d for d in docs if d["kind"] == "Secret"]
    hub = find(docs, "Deployment", "stackhub-hub")["spec"]["template"]["spec"]
    assert next(v for v in hub["volumes"] if v["name"] == "secrets")["secret"]["secretName"] == "site-hub-secrets"
    env = {e["name"]: e for e in hub["containers"][0]["env"]}
    assert env["STACKHUB_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "site-db", "key": "url"}


def test_homes_hub_state_and_data_claims_outlive_uninstall(helm):
    docs = render(helm, "defaults.yaml")
    claims = {(d["metadata"].get("namespace", "stackhub"), d["metadata"]["name"]): d
              for d in find(docs, "PersistentVolumeClaim")}
    assert set(claims) == {("stackhub", "stackhub-hub-state"), ("stackhub-users", "stackhub-data"),
                           ("stackhub", "stackhub-courses"), ("stackhub-users", "stackhub-courses")}
    keep = [c for c in claims.values()] + [d for d in docs if d["kind"] in ("PersistentVolume", "Namespace")]
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in keep)


def test_the_prepuller_pulls_the_offered_tags(helm):
    ds = find(render(helm, "tls-secret-oauth.yaml"), "DaemonSet", "tut-prepuller")
    images = [c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]]
    assert images == ["stackhub/lsst-stack:w_2026_42", "stackhub/lsst-stack:v30_0_0", "stackhub/lsst-stack:w_2026_43"]
    assert not [d for d in render(helm, "certmanager-externaldb.yaml") if d["kind"] == "DaemonSet"]


def test_hub_and_proxy_run_hardened(helm):
    docs = render(helm, "defaults.yaml")
    for name in ("stackhub-hub", "stackhub-proxy"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        sc = pod["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] and sc["capabilities"] == {"drop": ["ALL"]} and not sc["allowPrivilegeEscalation"]
    hub = find(docs, "Deployment", "stackhub-hub")["spec"]["template"]["spec"]["containers"][0]
    assert hub["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    proxy = find(docs, "Deployment", "stackhub-proxy")["spec"]["template"]["spec"]
    assert proxy["automountServiceAccountToken"] is False


# --- one stackhub.yaml, the same user server on Docker, Swarm and Kubernetes -----------------------

SITE = """
stack:
  recommended: w_2026_43
sizes:
  - {name: small, cpu: 1, memory: 2G}
  - {name: wide, cpu: 2.5, memory: 6G}
volumes:
  data:
    - {source: tutorial-data, target: /data}
    - {source: /srv/catalogs, target: /catalogs}
courses:
  mountPath: /opt/courses
spawner:
  uid: 1000
  tmpSize: 2G
"""


async def test_the_same_stackhub_yaml_gives_the_same_server_on_docker_swarm_and_kubernetes(helm, tmp_path, catalog, monkeypatch):
    import kubespawner.spawner
    from kubernetes_asyncio.client import ApiClient
    from traitlets.config import Config

    from spawner.backends.docker.objects import spawner_traits as docker_traits
    from spawner.backends.kubernetes.spawner import LSSTKubeSpawner
    from spawner.core.config import StackhubConfig
    from spawner.core.options import validate_options
    from spawner.core.specs import build_server_spec
    from spawner.hub.apply import HubPaths, apply_config

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **kw: None)
    monkeypatch.setattr(kubespawner.spawner, "shared_client", lambda name: None)
    site = yaml.safe_load(SITE)

    # Docker: the file as stackhub.yaml
    docker_cfg = StackhubConfig.model_validate(site)
    choice = validate_options({"image_tag": "w_2026_43", "size": "wide"}, catalog, docker_cfg.sizes, default_size="small")
    d = docker_traits(build_server_spec(docker_cfg, "ada", "", choice))

    # Kubernetes: the same content as Helm values, through the chart's ConfigMap to the hub
    kube_cfg = hub_config(render(helm, "defaults.yaml", values=site, tmp_path=tmp_path))
    assert kube_cfg.spawner.backend.type == "kubernetes"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for n in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (secrets / n).write_text("x\n")
    s = LSSTKubeSpawner(config=apply_config(Config(), kube_cfg, HubPaths(state=tmp_path, secrets=secrets)), _mock=True)
    s.user.name = "ada"
    s.orm_spawner = SimpleNamespace(name="", server=None, user=None, state=None)
    choice = validate_options({"image_tag": "w_2026_43", "size": "wide"}, catalog, kube_cfg.sizes, default_size="small")
    s.apply_spec(build_server_spec(kube_cfg, "ada", "", choice))
    async with ApiClient() as api:
        pod = api.sanitize_for_serialization(await s.get_pod_manifest())
    (c,) = pod["spec"]["containers"]

    assert c["image"] == d["image"] == "stackhub/lsst-stack:w_2026_43"
    # mounts: target -> (source, read-only); a Docker volume is a claim of the same name, a bind a hostPath
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    def source(v):
        if "persistentVolumeClaim" in v:
            return v["persistentVolumeClaim"]["claimName"]
        return v["hostPath"]["path"]

    kube_mounts = {m["mountPath"]: (source(volumes[m["name"]]), bool(m.get("readOnly")))
                   for m in c["volumeMounts"] if m["mountPath"] != "/tmp"}
    docker_mounts = {m["target"]: (m["source"], m["read_only"]) for m in d["mounts"]}
    assert kube_mounts == docker_mounts
    assert set(docker_mounts) == {"/home", "/data", "/catalogs", "/opt/courses"}
    # /tmp: a tmpfs of the same size
    assert d["extra_host_config"]["tmpfs"]["/tmp"].split("size=")[1].split(",")[0] == "2G"
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == str(2 * 2**30)
    # limits
    assert c["resources"]["limits"] == {"cpu": d["cpu_limit"], "memory": 6 * 2**30} and d["mem_limit"] == "6G"
    # environment: every variable of the Docker container, with the same value
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert d["environment"] and {k: env.get(k) for k in d["environment"]} == d["environment"]
    # uid, and no privilege on either
    assert str(c["securityContext"]["runAsUser"]) == d["extra_create_kwargs"]["user"] == "1000"
    assert c["securityContext"]["capabilities"]["drop"] == d["extra_host_config"]["cap_drop"] == ["ALL"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert d["extra_host_config"]["security_opt"] == ["no-new-privileges:true"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is d["extra_host_config"]["read_only"] is True

    # Swarm: the same file with spawner.backend: swarm gives the same service
    from spawner.backends.swarm.objects import service

    swarm_cfg = StackhubConfig.model_validate({**site, "spawner": {**site["spawner"], "backend": "swarm"}})
    choice = validate_options({"image_tag": "w_2026_43", "size": "wide"}, catalog, swarm_cfg.sizes, default_size="small")
    spec = build_server_spec(swarm_cfg, "ada", "", choice)
    task = service(spec, swarm_cfg.spawner.backend, prefix=swarm_cfg.hub.prefix, env=spec.environment,
                   args=["stackhub-start"])["task_template"]
    cs = task["ContainerSpec"]
    assert cs["Image"] == d["image"]
    assert {m["Target"]: (m["Source"], bool(m.get("ReadOnly"))) for m in cs["Mounts"] if m["Target"] != "/tmp"} \
        == docker_mounts
    assert task["Resources"]["Limits"] == {"NanoCPUs": int(2.5 * 10**9), "MemoryBytes": 6 * 2**30,
                                           "Pids": d["extra_host_config"]["pids_limit"]}
    swarm_env = dict(e.split("=", 1) for e in cs["Env"])
    assert {k: swarm_env.get(k) for k in d["environment"]} == d["environment"]
    assert cs["User"] == "1000" and cs["CapabilityDrop"] == ["ALL"] and cs["ReadOnly"] is True


# --- dask-gateway (spawner.backend.daskGateway) ------------------------------------------------------

GATEWAY_ROLES = {"dask-gateway", "dask-gateway-controller", "dask-gateway-traefik", "dask"}


def gateway_objects(docs):
    return [d for d in docs if d["metadata"].get("labels", {}).get(names.LABEL_ROLE) in GATEWAY_ROLES
            or d["apiVersion"].startswith("traefik.io/")]


def test_dask_gateway_is_rendered_only_when_enabled(helm):
    assert gateway_objects(render(helm, "defaults.yaml")) == []
    assert "dask-gateway-token" not in find(render(helm, "defaults.yaml"), "Secret", "stackhub-secrets")["data"]
    docs = render(helm, "node.yaml")
    own = names.Deployment("khtest")
    found = {(d["kind"], d["metadata"]["name"]) for d in gateway_objects(docs)}
    for kind, name in [("Deployment", own.dask_gateway), ("Service", own.dask_gateway), ("ConfigMap", own.dask_gateway),
                       ("Deployment", own.dask_gateway_controller), ("Deployment", own.dask_gateway_traefik),
                       ("Service", own.dask_gateway_traefik), ("IngressRoute", f"{own.dask_gateway}-api")]:
        assert (kind, name) in found, (kind, name, sorted(found))
    traefik = find(docs, "Service", own.dask_gateway_traefik)
    assert {p["name"]: p["port"] for p in traefik["spec"]["ports"]} == {
        "web": names.DASK_GATEWAY_WEB_PORT, "tcp": names.DASK_GATEWAY_TCP_PORT}


def test_dask_gateway_token_comes_from_the_generated_secret(helm):
    docs = render(helm, "node.yaml")
    secret = find(docs, "Secret", "khtest-secrets")
    assert len(secret["data"]["dask-gateway-token"]) >= 64 and len(set(secret["data"].values())) == 5
    gw = find(docs, "Deployment", "khtest-dask-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gw["env"]}
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "khtest-secrets", "key": "dask-gateway-token"}
    cm = find(docs, "ConfigMap", "khtest-dask-gateway")["data"]
    assert "dask-gateway-token" not in cm["settings.json"] and "JupyterHubAuthenticator" in cm["dask_gateway_config.py"]


def test_dask_gateway_settings_are_the_values(helm):
    import json

    docs = render(helm, "node.yaml")
    s = json.loads(find(docs, "ConfigMap", "khtest-dask-gateway")["data"]["settings.json"])
    values = yaml.safe_load((VALUES / "node.yaml").read_text())
    assert s["gateway"] == values["spawner"]["backend"]["daskGateway"]
    assert (s["namespace"], s["instance"], s["repository"]) == ("stackhub-users", "khtest-dask-gateway", "stackhub/lsst-stack")
    assert s["hubApiUrl"] == "http://khtest-hub:8081/hub/api" and s["serviceName"] == "dask-gateway"
    assert s["defaultImage"] == "stackhub/lsst-stack:w_2026_43" and s["imagePullPolicy"] == "Never"
    traefik = find(docs, "Deployment", "khtest-dask-gateway-traefik")["spec"]["template"]["spec"]["containers"][0]
    assert "--providers.kubernetescrd.namespaces=stackhub-users" in traefik["command"]
    # Traefik and its routes live in the users' namespace; the API server stays in the hub's, named
    # there by an ExternalName Service
    for kind, name in [("Deployment", "khtest-dask-gateway-traefik"), ("IngressRoute", "khtest-dask-gateway-api"),
                       ("Middleware", "khtest-dask-gateway-clusters"), ("Service", "khtest-dask-gateway-api")]:
        assert find(docs, kind, name)["metadata"]["namespace"] == "stackhub-users", (kind, name)
    assert "namespace" not in find(docs, "Deployment", "khtest-dask-gateway")["metadata"]
    auth = find(docs, "Middleware", "khtest-dask-gateway-dashboards")
    assert auth["metadata"]["namespace"] == "stackhub-users"
    assert auth["spec"]["forwardAuth"] == {
        "address": "http://khtest-dask-gateway.stackhub.svc:8000/api/stackhub/dashboard-auth",
        "preserveLocationHeader": True}
    assert (s["dashboardsMiddleware"], s["hubAuthorizeUrl"]) == ("khtest-dask-gateway-dashboards", "/hub/api/oauth2/authorize")
    api = find(docs, "Service", "khtest-dask-gateway-api")["spec"]
    assert (api["type"], api["externalName"]) == ("ExternalName", "khtest-dask-gateway.stackhub.svc")
    assert "--providers.kubernetescrd.labelselector=gateway.dask.org/instance=khtest-dask-gateway" in traefik["command"]
    assert traefik["image"] == "stackhub/dask-gateway:2026.3.0"


def test_dask_gateway_rbac_writes_in_its_namespace_and_only_reads_cluster_wide(helm):
    """dask-gateway's informers list cluster-wide: its ClusterRoles only read DaskClusters, pods and
    endpoints (and Traefik's, nodes); every write is namespaced; Traefik only reads."""
    docs = render(helm, "node.yaml")
    cluster_roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}
    assert set(cluster_roles) == {"stackhub-khtest-dask-gateway", "stackhub-khtest-dask-gateway-controller",
                                  "stackhub-khtest-dask-gateway-traefik"}
    for rules in cluster_roles.values():
        for rule in rules:
            assert set(rule["verbs"]) == {"get", "list", "watch"}, rule
            assert set(rule["resources"]) <= {"daskclusters", "pods", "endpoints", "nodes"}, rule
    assert [r["resources"] for r in cluster_roles["stackhub-khtest-dask-gateway-traefik"]] == [["nodes"]]
    assert not [d for d in render(helm, "defaults.yaml") if d["kind"].startswith("Cluster")]
    roles = {d["metadata"]["name"]: d["rules"] for d in find(docs, "Role")}
    assert set(roles) == {"khtest-hub", "khtest-hub-catalog", "khtest-dask-gateway", "khtest-dask-gateway-controller",
                          "khtest-dask-gateway-traefik"}
    # every gateway Role is in the users' namespace: none reads a Secret of the hub's
    for d in find(docs, "Role") + find(docs, "RoleBinding"):
        if "gateway" in d["metadata"]["name"]:
            assert d["metadata"]["namespace"] == "stackhub-users", d["metadata"]["name"]
    verbs = {(g, r): set(rule["verbs"]) for name in roles if "gateway" in name for rule in roles[name]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("", "pods") in verbs and ("", "pods/exec") not in verbs
    traefik = roles["khtest-dask-gateway-traefik"]
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in traefik)
    for name in ("khtest-dask-gateway", "khtest-dask-gateway-controller", "khtest-dask-gateway-traefik"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        sc = pod["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] and sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"]


def test_dask_gateway_network_policies(helm):
    """Users' servers reach Traefik only; Traefik is reached by servers and the proxy; the gateway
    by Traefik, the controller and the clusters; the hub's API by the gateway; clusters reach each
    other, the gateway and public addresses."""
    docs = render(helm, "node.yaml")
    pol = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}

    def roles(peers):
        return {p["podSelector"]["matchLabels"][names.LABEL_ROLE] for p in peers}

    spaces = {p["metadata"]["name"]: p["metadata"].get("namespace", "stackhub") for p in find(docs, "NetworkPolicy")}
    assert spaces["khtest-dask-gateway-clusters"] == spaces["khtest-dask-gateway-traefik"] == "stackhub-users"
    assert spaces["khtest-dask-gateway"] == spaces["khtest-dask-gateway-to-hub"] == "stackhub"

    users = pol["khtest-dask-gateway-users"]
    assert users["podSelector"]["matchLabels"][names.LABEL_ROLE] == "server" and users["policyTypes"] == ["Egress"]
    assert [roles(r["to"]) for r in users["egress"]] == [{"dask-gateway-traefik"}]
    traefik = pol["khtest-dask-gateway-traefik"]["ingress"]
    assert [roles(r["from"]) for r in traefik] == [{"server", "proxy", "hub"}]
    assert roles(pol["khtest-dask-gateway"]["ingress"][0]["from"]) == {"dask-gateway-traefik", "dask-gateway-controller", "dask"}
    to_hub = pol["khtest-dask-gateway-to-hub"]
    assert to_hub["podSelector"]["matchLabels"][names.LABEL_ROLE] == "hub"
    assert roles(to_hub["ingress"][0]["from"]) == {"dask-gateway"} and to_hub["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8081}]
    clusters = pol["khtest-dask-gateway-clusters"]
    assert clusters["podSelector"]["matchLabels"] == {names.LABEL_DEPLOYMENT: "khtest", names.LABEL_ROLE: "dask"}
    # no user's server, and no other cluster's pods (each cluster's own policy lets its pods in)
    assert not {"server", "dask"} & set().union(*(roles(r["from"]) for r in clusters["ingress"]))
    public = clusters["egress"][-1]["to"][0]["ipBlock"]
    assert public["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in public["except"] and "169.254.0.0/16" in public["except"]


@pytest.fixture
def gateway_config(helm, tmp_path):
    """The gateway's config file as dask-gateway-server loads it, from the rendered ConfigMap."""
    from traitlets.config.loader import PyFileConfigLoader

    cm = find(render(helm, "node.yaml"), "ConfigMap", "khtest-dask-gateway")["data"]
    for name, text in cm.items():
        (tmp_path / name).write_text(text)
    return PyFileConfigLoader("dask_gateway_config.py", path=str(tmp_path)).load_config()


def test_the_gateway_config_loads_and_sets_jupyterhub_auth_and_limits(gateway_config):
    c = gateway_config
    assert c.DaskGateway.authenticator_class == "dask_gateway_server.auth.JupyterHubAuthenticator"
    assert c.JupyterHubAuthenticator.jupyterhub_service_name == "dask-gateway"
    assert c.KubeBackend.gateway_instance == c.KubeController.gateway_instance == "khtest-dask-gateway"
    assert c.KubeController.proxy_prefix == "/services/dask-gateway"
    k = c.KubeClusterConfig
    assert (k.scheduler_cmd, k.worker_cmd) == (["dask", "scheduler"], ["dask", "worker"])
    assert (k.cluster_max_cores, k.cluster_max_memory, k.cluster_max_workers) == (2.0, 3 * 2**30, 2)
    assert k.scheduler_extra_pod_labels == {"stackhub.deployment": "khtest", "stackhub.role": "dask"}
    assert k.worker_extra_container_config["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the servers' data mounts, read-only (node.yaml: the default stackhub-data claim at /data)
    assert k.worker_extra_container_config["volumeMounts"] == [{"name": "data-0", "mountPath": "/data", "readOnly": True}]
    assert k.worker_extra_pod_config["volumes"] == [
        {"name": "data-0", "persistentVolumeClaim": {"claimName": "stackhub-data", "readOnly": True}}]


def test_cluster_options_accept_stack_images_only_and_bounded_workers(gateway_config):
    opts = gateway_config.Backend.cluster_options
    good = opts.get_configuration(opts.parse_options({"image": "stackhub/lsst-stack:w_2026_42", "worker_cores": 1}), None)
    assert good["image"] == "stackhub/lsst-stack:w_2026_42"
    assert (good["worker_cores_limit"], good["worker_cores"], good["worker_threads"]) == (1.0, 0.1, 1)
    assert good["worker_memory_limit"] == int(0.75 * 2**30)  # node.yaml: workerMemory 768M
    for image in ("evil/miner:latest", "stackhub/lsst-stack:w_2026_42;rm", "stackhub/lsst-stack-base:x", "stackhub/lsst-stack"):
        with pytest.raises(ValueError, match="not a stack image"):
            opts.get_configuration(opts.parse_options({"image": image}), None)
    with pytest.raises(ValueError):
        opts.parse_options({"worker_cores": 8})  # above maxWorkerCores
    with pytest.raises(ValueError):
        opts.parse_options({"worker_memory_gib": 16})


async def test_a_user_at_max_clusters_is_refused_a_new_one(gateway_config):
    from types import SimpleNamespace

    from dask_gateway_server.backends.base import PublicException

    backend = gateway_config.DaskGateway.backend_class

    async def list_clusters(username=None, statuses=None):
        return ["one"] if username == "ann" else []

    with pytest.raises(PublicException, match="at most 1"):
        await backend.start_cluster(SimpleNamespace(list_clusters=list_clusters), SimpleNamespace(name="ann"), {})


async def test_each_dask_cluster_gets_a_network_policy_of_its_own_pods(gateway_config, monkeypatch):
    """The controller's first step for a new cluster (its TLS Secret) also makes the cluster's
    NetworkPolicy: its pods are reached by each other only (a user's dask pods take no traffic
    from another user's); owned by the DaskCluster, so deleted with it."""
    from types import SimpleNamespace

    import kubernetes_asyncio.client
    from dask_gateway_server.backends.kubernetes.controller import KubeController

    made = []

    class Networking:
        def __init__(self, api_client):
            pass

        async def create_namespaced_network_policy(self, namespace, body):
            made.append((namespace, body))

    async def create_namespaced_secret(namespace, body):
        made.append((namespace, body["kind"]))

    monkeypatch.setattr(kubernetes_asyncio.client, "NetworkingV1Api", Networking)
    ctl = SimpleNamespace(gateway_instance="khtest-dask-gateway", api_client=None, log=SimpleNamespace(info=print),
                          core_client=SimpleNamespace(create_namespaced_secret=create_namespaced_secret))
    ctl.get_labels = lambda name, component=None: KubeController.get_labels(ctl, name, component)
    ctl.common_labels = {}
    ctl.make_secret = lambda name: {"kind": "Secret", "metadata": {"name": f"dask-{name}"}}
    cluster = {"apiVersion": "gateway.dask.org/v1alpha1", "kind": "DaskCluster",
               "metadata": {"name": "abc", "namespace": "stackhub-users", "uid": "u-1"}}
    assert await KubeController.create_secret_if_not_exists(ctl, cluster) == "dask-abc"
    (ns, secret), (ns2, policy) = made
    assert secret == "Secret" and ns == ns2 == "stackhub-users"
    own = {"gateway.dask.org/instance": "khtest-dask-gateway", "gateway.dask.org/cluster": "abc"}
    assert policy["spec"] == {"podSelector": {"matchLabels": own}, "policyTypes": ["Ingress"],
                              "ingress": [{"from": [{"podSelector": {"matchLabels": own}}]}]}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"


async def test_a_clusters_dashboard_is_for_its_owner_and_a_browser_without_session_goes_to_the_hub(gateway_config):
    """The gateway's forwardAuth handler (Traefik asks it before every dashboard request)."""
    from types import SimpleNamespace

    from aiohttp import web
    from dask_gateway_server.routes import default_routes

    handlers = {r.path: r.handler for r in default_routes if hasattr(r, "path")}
    auth, callback = handlers["/api/stackhub/dashboard-auth"], handlers["/oauth_callback"]
    sessions = auth.__globals__["_sessions"]
    clusters = {"stackhub-users.abc": SimpleNamespace(username="ann")}

    async def get_cluster(name):
        return clusters.get(name)

    def request(uri, cookies=None, query=None):
        return SimpleNamespace(headers={"X-Forwarded-Uri": uri}, cookies=cookies or {}, query=query or {},
                               app={"backend": SimpleNamespace(get_cluster=get_cluster)})

    uri = "/services/dask-gateway/clusters/stackhub-users.abc/status"
    with pytest.raises(web.HTTPFound) as to_hub:
        await auth(request(uri))
    location = to_hub.value.location
    assert location.startswith("/hub/api/oauth2/authorize?") and "client_id=service-dask-gateway" in location
    assert "redirect_uri=%2Fservices%2Fdask-gateway%2Foauth_callback" in location
    assert "stackhub-dask-state" in to_hub.value.cookies
    sessions["s-ann"] = (float("inf"), "ann")
    sessions["s-bob"] = (float("inf"), "bob")
    assert (await auth(request(uri, {"stackhub-dask-session": "s-ann"}))).status == 200
    for who, path in [("s-bob", uri), ("s-ann", "/services/dask-gateway/clusters/stackhub-users.zzz/status"),
                      ("s-ann", "/services/dask-gateway/api/v1/clusters/")]:
        with pytest.raises(web.HTTPForbidden):
            await auth(request(path, {"stackhub-dask-session": who}))
    # a callback whose state is not the browser's own is refused before the hub is asked
    with pytest.raises(web.HTTPForbidden):
        await callback(request(uri, {"stackhub-dask-state": "mine"}, {"state": f"theirs:{uri}", "code": "x"}))
    with pytest.raises(web.HTTPForbidden):
        await callback(request(uri, {"stackhub-dask-state": "s"}, {"state": "s:https://evil.example/", "code": "x"}))
