"""The Kubernetes backend without a cluster: the pod KubeSpawner makes from a ServerSpec (golden),
its hardening, homes, the catalog ConfigMap, and the engine's checks of what a pod is."""

import json
from types import SimpleNamespace

import pytest
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from spawner.backends.kubernetes import objects
from spawner.backends.kubernetes.engine import KubeEngine, exec_argv
from spawner.core import names
from spawner.core.catalog import catalog_configmap, catalog_from_images, images_from_configmap
from spawner.core.config import StackhubConfig
from spawner.core.options import validate_options
from spawner.core.specs import build_server_spec
from spawner.hub.apply import HubPaths, apply_config

KUBE = {"spawner": {"backend": {"type": "kubernetes"}}}


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    """KubeSpawner loads a kubeconfig and makes an API client when constructed: not here."""
    import kubespawner.spawner

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **kw: None)
    monkeypatch.setattr(kubespawner.spawner, "shared_client", lambda name: None)


def kube_cfg(extra=None):
    data = json.loads(json.dumps(KUBE))
    for key, value in (extra or {}).items():
        if key == "spawner":
            data["spawner"].update(value)
        else:
            data[key] = value
    return StackhubConfig.model_validate(data)


def spawner_for(cfg, tmp_path, user="ada", server="big-run"):
    from spawner.backends.kubernetes.spawner import LSSTKubeSpawner

    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (secrets / name).write_text("x\n")
    c = apply_config(Config(), cfg, HubPaths(state=tmp_path, secrets=secrets))
    s = LSSTKubeSpawner(config=c, _mock=True)
    s.user.name = user
    s.orm_spawner = SimpleNamespace(name=server, server=None, user=None, state=None)
    return s


def spec_for(cfg, catalog, user="ada", server="big-run", tag="w_2026_43", size="small"):
    choice = validate_options({"image_tag": tag, "size": size}, catalog, cfg.sizes, default_size="small")
    return build_server_spec(cfg, user, server, choice)


async def pod_of(cfg, catalog, tmp_path, **kw):
    s = spawner_for(cfg, tmp_path, kw.get("user", "ada"), kw.get("server", "big-run"))
    s.apply_spec(spec_for(cfg, catalog, **kw))
    async with ApiClient() as api:
        return s, api.sanitize_for_serialization(await s.get_pod_manifest())


def stable(pod):
    """The pod without the per-run values KubeSpawner puts in the environment (tokens, URLs)."""
    for c in pod["spec"]["containers"]:
        c["env"] = [e for e in c["env"] if not e["name"].startswith(("JUPYTERHUB_", "JPY_"))]
    return pod


async def test_the_pod_of_a_users_named_server_golden(catalog, golden, tmp_path):
    s, pod = await pod_of(kube_cfg(), catalog, tmp_path)
    golden("kube_pod_ada_named", stable(pod))
    async with ApiClient() as api:
        golden("kube_home_pvc_ada", api.sanitize_for_serialization(s.get_pvc_manifest()))


async def test_the_pod_is_non_root_without_capabilities_or_escalation(catalog, tmp_path):
    _, pod = await pod_of(kube_cfg(), catalog, tmp_path)
    spec = pod["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (1000, 1000, True)
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["securityContext"]["fsGroup"] == 1000
    # the one root step: chown of the home's mount point, with CAP_CHOWN alone
    (init,) = spec["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["volumeMounts"] == [{"name": "home", "mountPath": "/home"}]


async def test_image_mounts_and_size_come_from_the_spec(catalog, tmp_path):
    _, pod = await pod_of(kube_cfg(), catalog, tmp_path, tag="v30_0_0", size="medium")
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "stackhub/lsst-stack:v30_0_0" and c["args"][0] == "stackhub-start"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and mounts["/opt/stackhub/courses"]["readOnly"] is True
    assert not mounts["/home"].get("readOnly")
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["home"]["persistentVolumeClaim"]["claimName"] == "stackhub-home-ada"
    data = vols[mounts["/data"]["name"]]
    assert data["persistentVolumeClaim"] == {"claimName": "stackhub-data", "readOnly": True}
    assert vols["tmp"]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(2**30)}
    # medium: 2 cores, 4G; requests are guaranteeFraction (0.1) of that
    assert c["resources"]["limits"] == {"cpu": 2.0, "memory": 4 * 2**30}
    assert c["resources"]["requests"] == {"cpu": 0.2, "memory": int(4 * 2**30 * 0.1)}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HOME"] == "/home/ada" and env["STACKHUB_TAG"] == "v30_0_0" and env["MEM_LIMIT"] == "4G"
    # Kubernetes names are lower-case: escapes in lower-case hex
    assert pod["metadata"]["name"] == "stackhub-user-ada--big-2drun"


async def test_one_shared_rwx_claim_with_a_subpath_per_user(catalog, tmp_path):
    cfg = kube_cfg({"spawner": {"backend": {"type": "kubernetes", "homes": {"type": "shared", "sharedClaim": "homes"}}}})
    s, pod = await pod_of(cfg, catalog, tmp_path)
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["home"]["persistentVolumeClaim"] == {"claimName": "homes"}
    (c,) = pod["spec"]["containers"]
    home = next(m for m in c["volumeMounts"] if m["mountPath"] == "/home")
    assert home["subPath"] == "stackhub-home-ada"
    assert s.storage_pvc_ensure is False  # no per-user claim is made


async def test_a_host_path_data_mount_and_no_chown_step(catalog, tmp_path):
    cfg = kube_cfg({"volumes": {"data": [{"source": "/srv/tutorial", "target": "/data"}]},
                    "spawner": {"backend": {"type": "kubernetes", "homes": {"initChown": False}}}})
    _, pod = await pod_of(cfg, catalog, tmp_path)
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["data-0"]["hostPath"] == {"path": "/srv/tutorial", "type": "Directory"}
    assert not pod["spec"].get("initContainers")


@pytest.mark.parametrize("name", ["ada", "Jürgen.M", "x" * 80, "-dash", "a.b_c"])
def test_label_values_are_valid_for_any_username(name):
    import re

    v = objects.label_value(name)
    assert len(v) <= 63 and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", v)


def test_label_values_keep_users_apart():
    assert len({objects.label_value(n) for n in ["ann", "Ann", "ann.", "x" * 80, "x" * 81]}) == 5


async def test_raw_names_go_in_annotations(catalog, tmp_path):
    _, pod = await pod_of(kube_cfg(), catalog, tmp_path, user="Jürgen.M", server="")
    ann = pod["metadata"]["annotations"]
    assert ann[objects.ANNOTATION_USER] == "Jürgen.M" and ann[objects.ANNOTATION_SERVER] == ""
    labels = pod["metadata"]["labels"]
    assert labels[names.LABEL_USER] == objects.label_value("Jürgen.M")
    assert labels[names.LABEL_ROLE] == "server" and labels[names.LABEL_DEPLOYMENT] == "stackhub"


def test_the_catalog_configmap_round_trips_into_the_same_catalog():
    from tests.unit.conftest import image

    images = [image("w_2026_43", extra_tags=["stackhub/lsst-stack:recommended"]), image("v30_0_0", "release"),
              image("other", repo="someone/else")]
    cm = catalog_configmap("stackhub-stack-catalog", images, "stackhub/lsst-stack")
    assert sorted(cm["data"]) == ["v30_0_0", "w_2026_43"]  # not the alias, not other repositories
    direct = catalog_from_images(images, "stackhub/lsst-stack", recommended="w_2026_43")
    via_cm = catalog_from_images(images_from_configmap(cm["data"]), "stackhub/lsst-stack",
                                 recommended="w_2026_43")
    assert via_cm.names() == direct.names() == ["v30_0_0", "w_2026_43"]
    assert via_cm.get("w_2026_43").versions == {"lsst-daf-butler": "30.2026.4300"}
    # junk in the ConfigMap is skipped, not a crash
    assert images_from_configmap({"a": "not json", "b": "[]", "c": json.dumps({"labels": {}})}) == []


def pod_dict(name, user, server="", prefix="stackhub", phase="Running"):
    return {"metadata": {"name": name,
                         "labels": {names.LABEL_ROLE: "server", names.LABEL_DEPLOYMENT: prefix,
                                    names.LABEL_USER: objects.label_value(user)},
                         "annotations": {objects.ANNOTATION_USER: user, objects.ANNOTATION_SERVER: server}},
            "status": {"phase": phase}}


def test_the_engine_finds_servers_by_labels_and_refuses_impostors(monkeypatch):
    engine = KubeEngine(kube_cfg(), namespace="ns")
    pods = [pod_dict("stackhub-user-ada", "ada"),
            pod_dict("stackhub-user-bob--two", "bob", "two"),
            # claims to be carol's but is not named as carol's server: not hers
            pod_dict("something-else", "carol"),
            # another deployment's server
            pod_dict("other-user-dan", "dan", prefix="other"),
            pod_dict("stackhub-user-eve", "eve", phase="Pending")]
    monkeypatch.setattr(engine, "_pods", lambda: pods)
    found = engine.running_servers()
    assert sorted(found) == ["ada", "bob"]
    assert (found["bob"].server, found["bob"].name) == ("two", "stackhub-user-bob--two")


def test_exec_runs_as_the_servers_uid_only_and_passes_the_environment():
    from spawner.backends.base import EngineError, RunningServer

    engine = KubeEngine(kube_cfg(), namespace="ns")
    with pytest.raises(EngineError, match="uid 1000"):
        engine.exec(RunningServer("ada", "", "stackhub-user-ada"), ["id"], user="0")
    assert exec_argv(["sync", "a"], {"X": "1"}) == ["env", "X=1", "sync", "a"]
    assert exec_argv(["id"], None) == ["id"]


def test_the_hub_config_picks_the_kubernetes_spawner(tmp_path):
    s = spawner_for(kube_cfg(), tmp_path)
    assert type(s).__name__ == "LSSTKubeSpawner" and s.cmd == ["stackhub-start"]


def test_servers_in_the_users_namespace_reach_the_hub_by_its_namespaced_name(tmp_path, monkeypatch):
    """The chart runs users' pods in a namespace of their own: the hub's Service name alone does
    not resolve there; in the hub's own namespace JupyterHub's hub_connect_url serves."""
    from spawner.backends.kubernetes import engine, spawner

    sa_ns = tmp_path / "namespace"
    sa_ns.write_text("stackhub\n")
    monkeypatch.setattr(engine, "SA_NAMESPACE", sa_ns)
    monkeypatch.setattr(spawner, "own_namespace", engine.own_namespace)
    s = spawner_for(kube_cfg({"spawner": {"backend": {"type": "kubernetes", "namespace": "stackhub-users"}}}), tmp_path)
    assert s.namespace == "stackhub-users"
    assert s.hub_connect_url == "http://stackhub-hub.stackhub.svc:8081"
    s = spawner_for(kube_cfg({"spawner": {"backend": {"type": "kubernetes", "namespace": "stackhub"}}}), tmp_path)
    assert s.hub_connect_url is None
    # the stack catalog stays the hub's: read in its namespace, not the users'
    assert KubeEngine(kube_cfg(), namespace="stackhub-users").catalog_namespace == "stackhub"


def test_the_course_service_starts_on_kubernetes_and_a_check_says_why_it_cannot_run():
    """The courses service asks every engine for a check runner at start: Kubernetes gives one
    whose every run fails with the reason (a cell of the matrix), never a crash of the service."""
    import pytest

    from spawner.backends.base import EngineError
    from spawner.backends.kubernetes.engine import KubeEngine

    runner = KubeEngine.check_runner(object.__new__(KubeEngine))
    runner.remove_leftovers("stackhub")
    with pytest.raises(EngineError, match="Kubernetes"):
        runner.run({}, print)
