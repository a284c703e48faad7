"""The demo data builder's container and its choice of stack image (pure parts of deploy.demo_data)."""

import json

from spawner.core.config import StackhubConfig
from spawner.deploy.demo_data import builder_container, butler_version, data_target, stack_images


def test_the_builder_writes_only_the_data_volume_with_no_network_and_no_capabilities():
    cfg = StackhubConfig.model_validate({"hub": {"prefix": "stackhub-x"}})
    kw = builder_container(cfg, "sha256:1", "v30_0_0")
    assert kw["mounts"] == [{"Type": "volume", "Source": "stackhub-data", "Target": "/data", "ReadOnly": False}]
    assert kw["network_mode"] == "none" and kw["cap_drop"] == ["ALL"] and kw["security_opt"] == ["no-new-privileges"]
    assert kw["user"] == "0" and kw["command"][-1].endswith("demo_repo.py v30_0_0")
    assert kw["labels"] == {"stackhub.role": "demo-data", "stackhub.deployment": "stackhub-x"}
    bind = StackhubConfig.model_validate({"volumes": {"data": [{"source": "/srv/data", "target": "/data"}]}})
    assert builder_container(bind, "i", "t")["mounts"][0]["Type"] == "bind"


def test_no_data_mount_at_slash_data_means_no_demo_data():
    cfg = StackhubConfig.model_validate({"volumes": {"data": [{"source": "cats", "target": "/data/catalogs"}]}})
    assert data_target(cfg) is None


class Image:
    def __init__(self, tag, butler):
        self.tags = [f"stackhub/lsst-stack:{tag}"]
        self.labels = {"stackhub.tag": tag}
        self.attrs = {"Config": {"Labels": {"stackhub.versions": json.dumps({"lsst-daf-butler": butler})}}}
        self.id = f"sha256:{tag}"


class Images:
    def __init__(self, images):
        self._images = images

    def list(self, name):
        return self._images


class Client:
    def __init__(self, images):
        self.images = Images(images)


def test_the_oldest_butler_makes_the_repository_and_recommended_is_no_tag_of_its_own():
    rec = Image("w_2026_43", "30.2026.4300")
    rec.tags.append("stackhub/lsst-stack:recommended")
    images = [rec, Image("w_2026_42", "30.2026.4200"), Image("v30_0_0", "30.0.0rc3"), Image("exp_x", "not a version")]
    assert [t for t, _ in stack_images(Client(images), "stackhub/lsst-stack")] == [
        "v30_0_0", "w_2026_42", "w_2026_43", "exp_x"]
    assert butler_version({"Config": {"Labels": {}}}) == (1, None)
