import json
from pathlib import Path

import pytest

from spawner.core.catalog import catalog_from_images

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def golden(request):
    """Compare data with tests/unit/golden/<name>.json; --regen-golden rewrites the file."""
    def check(name, data):
        path = GOLDEN / f"{name}.json"
        text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
        if request.config.getoption("--regen-golden"):
            path.write_text(text)
        assert path.exists(), f"no golden file {path}: run pytest --regen-golden, then review and commit it"
        assert json.loads(path.read_text()) == json.loads(text), f"differs from {path} (--regen-golden to accept)"
    return check


def image(tag, cls="weekly", repo="stackhub/lsst-stack", extra_tags=()):
    return {
        "RepoTags": [f"{repo}:{tag}", *extra_tags],
        "Labels": {"stackhub.tag": tag, "stackhub.class": cls,
                   "stackhub.versions": json.dumps({"lsst-daf-butler": "30.2026.4300"}),
                   "stackhub.build-date": "2026-11-26"},
    }


@pytest.fixture
def catalog():
    images = [image("w_2026_41"), image("w_2026_43", extra_tags=["stackhub/lsst-stack:recommended"]),
              image("w_2026_42"), image("w_2026_40"), image("w_2026_39"),
              image("v30_0_0", "release"), image("d_2026_11_25", "daily"),
              image("other", repo="someone/else")]
    return catalog_from_images(images, "stackhub/lsst-stack", recommended="w_2026_43",
                               registry_tags=["w_2026_30", "w_2026_43"])
