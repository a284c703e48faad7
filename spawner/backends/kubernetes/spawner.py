"""``LSSTKubeSpawner``: kubespawner's KubeSpawner serving the LSST stack, one pod per user server.

The form, the check of ``user_options`` and the progress events are every backend's
(``spawner.backends.base.StackhubSpawnerMixin``). What this class adds to KubeSpawner, and why:
- the spec becomes KubeSpawner's traits through the pure ``objects.spawner_traits`` (the same
  ServerSpec as the Docker container: image, mounts, limits, environment, uid);
- the pod and the home claim are named by ``spawner.core.names`` (the Docker names), not by
  KubeSpawner's templates, so one module names every object on every backend;
- the tag catalog is the ConfigMap the image build writes (``KubeEngine.list_images``).
"""

from __future__ import annotations

from kubespawner import KubeSpawner
from traitlets import default

from spawner.backends.base import StackhubSpawnerMixin
from spawner.backends.catalog_source import CatalogSource
from spawner.backends.kubernetes import objects
from spawner.backends.kubernetes.engine import KubeEngine, own_namespace
from spawner.core import names
from spawner.core.specs import ServerSpec


class LSSTKubeSpawner(StackhubSpawnerMixin, KubeSpawner):
    @property
    def kube(self):
        backend = self.cfg.spawner.backend
        if backend.type != "kubernetes":
            raise RuntimeError(f"LSSTKubeSpawner needs spawner.backend.type kubernetes, not {backend.type!r}")
        return backend

    def make_catalog_source(self) -> CatalogSource:
        engine = KubeEngine(self.cfg, namespace=self.namespace)
        return CatalogSource(engine.list_images, self.cfg.stack)

    # -- defaults KubeSpawner takes from config -------------------------------------------

    @default("namespace")
    def _default_namespace(self):
        # spawner.backend.namespace, else KubeSpawner's own default (the hub pod's namespace)
        return self.kube.namespace or super()._namespace_default()

    @default("hub_connect_url")
    def _default_hub_connect_url(self):
        # users' pods in a namespace of their own (the chart's) reach the hub's Service by its
        # namespace-qualified name; in the hub's namespace, JupyterHub.hub_connect_url serves
        hub_ns = own_namespace()
        if not hub_ns or hub_ns == self.namespace:
            return None
        return f"http://{names.Deployment(self.cfg.hub.prefix).hub}.{hub_ns}.svc:{names.HUB_API_PORT}"

    @default("cmd")
    def _default_cmd(self):
        return ["stackhub-start"]

    @default("delete_grace_period")
    def _default_delete_grace_period(self):
        return 5

    def apply_spec(self, spec: ServerSpec):
        """Hand a built spec to KubeSpawner's traits (``objects.spawner_traits``); what the hub's
        config already put in the merged ones (environment, labels, annotations) stays."""
        self.server_spec = spec
        for name, value in objects.spawner_traits(spec, self.kube).items():
            if name in ("environment", "extra_labels", "extra_annotations", "extra_pod_config"):
                value = {**getattr(self, name), **value}
            setattr(self, name, value)

    async def start(self):
        spec = self.server_spec
        self._event(10, f"Image {spec.image}")
        claim = objects.claim_name(spec)
        self._event(20, f"Home claim {claim}" if self.kube.homes.type == "pvc"
                    else f"Home {claim} on {self.kube.homes.shared_claim}")
        self._event(40, f"Starting pod {objects.pod_name(spec)}")
        ip_port = await super().start()
        self._event(70, "Pod running; waiting for JupyterLab to answer")
        return ip_port
