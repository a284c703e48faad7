"""The Helm chart's values (helm/stackhub): the stackhub config model plus one ``chart`` section.

Every top-level key but ``chart`` is ``stackhub.yaml`` itself: the chart writes those keys, as
given, into the hub's ConfigMap and the hub reads them back with ``load_config`` (the one config
model, the one route). ``chart`` holds what only the cluster needs (Ingress, Services, the hub's
database, RBAC, NetworkPolicies, the pre-puller). ``values.schema.json`` is generated from
``HelmValues`` (``stackhub schema --helm``); tests/unit/test_helm.py fails when the file in the
chart and the model drift apart. A wrong value therefore fails ``helm install``, naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from spawner.core.config import Model, StackhubConfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "stackhub"
SCHEMA_FILE = CHART / "values.schema.json"
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|m|K|M|G|T)?$"


class IngressTLS(Model):
    secret_name: str | None = Field(None, description="Existing TLS Secret (kubernetes.io/tls) for hub.publicHost; with a cert-manager issuer, the Secret cert-manager fills.")
    cert_manager_issuer: str | None = Field(None, description="cert-manager Issuer (same namespace) that issues the certificate (annotation cert-manager.io/issuer).")
    cert_manager_cluster_issuer: str | None = Field(None, description="cert-manager ClusterIssuer that issues the certificate (annotation cert-manager.io/cluster-issuer).")


class Ingress(Model):
    enabled: bool = Field(True, description="Route https://<hub.publicHost>/ to the proxy through an Ingress (TLS ends there).")
    class_name: str | None = Field(None, description="IngressClass (e.g. nginx). None: the cluster's default class.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations of the Ingress (e.g. the controller's body size limit).")
    tls: IngressTLS = IngressTLS()


class ProxyService(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Type of the proxy's public Service (<prefix>-proxy, port 80). ClusterIP behind the Ingress; NodePort or LoadBalancer without one.")
    node_port: int | None = Field(None, ge=30000, le=32767, description="Fixed node port when type is NodePort.")


class SecretKeyRef(Model):
    name: str = Field(pattern=_NAME, description="Secret name.")
    key: str = Field(description="Key in the Secret.")


class HubDatabase(Model):
    type: Literal["pvc", "external"] = Field("pvc", description="pvc: SQLite on the hub's state claim. external: a database URL from a Secret (postgresql://...; the hub image needs its driver).")
    url_secret: SecretKeyRef | None = Field(None, description="type external: the Secret key holding the database URL (never in values).")


class Storage(Model):
    storage_class: str | None = Field(None, description="StorageClass. None: the cluster's default.")
    capacity: str = Field("1Gi", pattern=_QUANTITY, description="Requested size.")


class NFSShare(Model):
    server: str = Field(min_length=1, description="NFS server (name or address).")
    path: str = Field(pattern=r"^/", description="Exported directory; each claim is its subdirectory <path>/<claim> (made beforehand).")


class SharedClaims(Model):
    create: bool = Field(True, description="Create the claims the data mounts and the courses volume name (a claim per source that is not an absolute path), in the users' namespace; the courses claim in the hub's namespace too. Kept by `helm uninstall`.")
    storage_class: str | None = Field(None, description="StorageClass. None: the cluster's default.")
    capacity: str = Field("10Gi", pattern=_QUANTITY, description="Requested size of each.")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"]] = Field(
        default_factory=lambda: ["ReadWriteMany"], description="The hub writes the courses and users' pods on every node read them: ReadWriteMany (ReadWriteOnce on a single node).")
    nfs: NFSShare | None = Field(None, description="Back each claim with a PersistentVolume on this NFS export (<path>/<claim>), made by the chart. The courses volume is written by the hub and read in the users' namespace: a claim in each namespace, so it needs one volume two claims can bind (nfs or hostPath); a dynamic StorageClass gives each claim its own.")
    host_path: str | None = Field(None, pattern=r"^/", description="Back each claim with a hostPath PersistentVolume under this directory of the node (<hostPath>/<claim>): single-node clusters and tests only.")


class UsersNamespace(Model):
    create: bool = Field(True, description="Create the users' namespace (spawner.backend.namespace, else <release namespace>-users) with its Pod Security labels. False: it exists already, labelled by the site.")
    pod_security: Literal["baseline", "restricted"] = Field("baseline", description="Pod Security Standard the API server enforces on every pod of the users' namespace (user servers, dask schedulers and workers): privileged, hostPath, host namespaces and added capabilities are refused. The user pods' home init container (root, CAP_CHOWN) needs baseline; `restricted` is always warned and audited.")


class PrePuller(Model):
    enabled: bool = Field(True, description="A DaemonSet that pulls the offered stack images on every node, so the first spawn of a tag does not wait for a pull.")
    tags: list[str] = Field(default_factory=list, description="Stack tags to pull (stack.recommended is always pulled).")


class Resources(Model):
    cpu: str = Field("100m", pattern=_QUANTITY, description="CPU request.")
    memory: str = Field("256Mi", pattern=_QUANTITY, description="Memory request.")
    memory_limit: str = Field("1Gi", pattern=_QUANTITY, description="Memory limit.")


class ChartSettings(Model):
    """What only the cluster needs; everything else is stackhub.yaml (the other top-level keys)."""

    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field("IfNotPresent", description="Pull policy of the hub, proxy and pre-puller pods (hub.image).")
    existing_secret: str | None = Field(None, pattern=_NAME, description="Secret with keys proxy-token, admin-token, admin-password and shared-password to use instead of the generated one.")
    ingress: Ingress = Ingress()
    proxy_service: ProxyService = ProxyService()
    hub_database: HubDatabase = HubDatabase()
    hub_storage: Storage = Field(default_factory=Storage, description="The hub's state claim (database, cookie secret, policy, passwords).")
    shared_claims: SharedClaims = SharedClaims()
    users: UsersNamespace = Field(default_factory=UsersNamespace, description="The namespace of users' pods (servers, dask clusters), apart from the hub's: the hub's ServiceAccount creates and execs pods there only, and its Secrets are not there.")
    rbac: bool = Field(True, description="Create the hub's ServiceAccount, a Role in the users' namespace (pods, pods/exec, claims, events) and one in its own (the catalog ConfigMap); nothing cluster-wide.")
    network_policy: bool = Field(True, description="Create NetworkPolicies: user pods reach the hub API, DNS and (spawner.network.internet) public addresses only; only the hub reaches the proxy API.")
    pre_puller: PrePuller = PrePuller()
    # the hub's CPU share decides how fast a burst of spawns gets through it (bench/RESULTS-k8s.md)
    hub_resources: Resources = Field(default_factory=lambda: Resources(cpu="500m"), description="The hub's requests and memory limit.")
    proxy_resources: Resources = Field(default_factory=lambda: Resources(cpu="50m", memory="64Mi", memory_limit="512Mi"), description="The proxy's requests and memory limit.")


class HelmValues(StackhubConfig):
    """The chart's values: stackhub.yaml's keys, and ``chart``."""

    chart: ChartSettings = ChartSettings()


def values_schema() -> dict:
    """The chart's values.schema.json."""
    schema = HelmValues.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "stackhub Helm chart values (generated by `stackhub schema --helm`; do not edit)"
    return schema


def schema_text() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


def config_of_values(values: dict) -> StackhubConfig:
    """The StackhubConfig the hub gets from these chart values (their keys but ``chart``)."""
    HelmValues.model_validate(values)
    return StackhubConfig.model_validate({k: v for k, v in values.items() if k != "chart"})
