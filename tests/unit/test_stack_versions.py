"""Tag <-> package version mapping (spawner.build.stack_versions) and the pure parts of spawner.build.images."""

import datetime
import json

import pytest

from spawner.build import images
from spawner.build.stack_versions import (
    UnbuildableTag,
    buildable_tags,
    installable_versions,
    pick_version,
    resolve,
    weekly_of,
)

# A slice of what PyPI really holds (Nov 2026): butler never had a final 30.0.0 on PyPI, only rcs;
# sphgeom skips weeks; daf-relation stopped at w_2025_45 / 29.2.1.
VERSIONS = {
    "lsst-daf-butler": ["29.2.1", "30.0.0rc1", "30.0.0rc3", "30.0.1", "30.2026.4100", "30.2026.4200",
                        "30.2026.4300", "30.2026.500", "30.2026.900", "29.2025.5000"],
    "lsst-pipe-base": ["29.2.1", "30.0.0rc2", "30.0.0", "30.0.1", "30.2026.4100", "30.2026.4300"],
    "lsst-sphgeom": ["29.2.1", "30.0.0", "30.2026.3900", "30.2026.4000", "30.2026.500"],
    "lsst-daf-relation": ["29.2.0", "29.2.1", "29.2025.4400", "29.2025.4500"],
}


@pytest.mark.parametrize(
    "version, expected",
    [
        ("30.2026.4300", (2026, 43)),
        ("30.2026.500", (2026, 5)),
        ("29.2025.5000", (2025, 50)),
        ("30.0.1", None),
        ("30.0.0rc1", None),
        ("30.2026.4301", None),
        ("30.2026.9900", None),
    ],
)
def test_weekly_of(version, expected):
    assert weekly_of(version) == expected


@pytest.mark.parametrize(
    "tag, package, expected",
    [
        ("w_2026_43", "lsst-daf-butler", "30.2026.4300"),
        ("w_2026_42", "lsst-daf-butler", "30.2026.4200"),
        ("w_2026_42", "lsst-pipe-base", "30.2026.4100"),  # no 4200: the newest not later
        ("w_2026_43", "lsst-sphgeom", "30.2026.4000"),
        ("w_2026_10", "lsst-daf-butler", "30.2026.900"),  # 900 < 4100 numerically, week 9 < week 10
        ("w_2026_04", "lsst-daf-butler", "29.2025.5000"),  # across the year
        ("w_2026_43", "lsst-daf-relation", "29.2025.4500"),
        ("v30_0_0", "lsst-pipe-base", "30.0.0"),
        ("v30_0_0", "lsst-daf-butler", "30.0.0rc3"),  # only rcs of 30.0.0 reached PyPI
        ("v30_0_0", "lsst-daf-relation", "29.2.1"),
        ("v30_0_1", "lsst-sphgeom", "30.0.0"),
        ("v30_0_0_rc2", "lsst-daf-butler", "30.0.0rc1"),
        ("v30_0_0_rc2", "lsst-pipe-base", "30.0.0rc2"),
        ("v29_2_0", "lsst-daf-butler", None),
        ("d_2026_10_21", "lsst-daf-butler", "30.2026.4300"),  # ISO week 43 of 2026
        ("w_2026_05", "lsst-sphgeom", "30.2026.500"),
    ],
)
def test_pick_version(tag, package, expected):
    assert pick_version(tag, VERSIONS[package]) == expected


def test_weekly_never_picks_a_release_and_release_never_a_weekly():
    assert pick_version("w_2026_43", ["30.0.9", "30.0.10"]) is None
    assert pick_version("v30_0_10", ["30.2026.4300"]) is None


def test_resolve_pins_every_package():
    assert resolve("w_2026_43", VERSIONS) == {
        "lsst-daf-butler": "30.2026.4300",
        "lsst-pipe-base": "30.2026.4300",
        "lsst-sphgeom": "30.2026.4000",
        "lsst-daf-relation": "29.2025.4500",
    }
    assert resolve("v30_0_0", VERSIONS)["lsst-daf-butler"] == "30.0.0rc3"


@pytest.mark.parametrize(
    "tag, why",
    [
        ("w_2026_44", "no LSST package was published as that tag"),  # the future
        ("w_2025_10", "no LSST package was published"),  # never published
        ("exp_mybranch", "experimental tag has no package versions"),
        ("recommended", "alias tag"),
        ("not a tag!", "is not a stack tag"),
        ("d_2026_12_20", "no weekly was published in that date's week"),
    ],
)
def test_unbuildable_tag_names_the_buildable_ones(tag, why):
    with pytest.raises(UnbuildableTag) as err:
        resolve(tag, VERSIONS)
    msg = str(err.value)
    assert why in msg
    assert "Buildable tags: w_2026_43, w_2026_42, w_2026_41" in msg
    assert "w_2026_43" in err.value.buildable


def test_unbuildable_when_one_package_is_too_new():
    versions = dict(VERSIONS, **{"lsst-ctrl-new": ["30.2026.4300"]})
    with pytest.raises(UnbuildableTag, match="lsst-ctrl-new"):
        resolve("w_2026_42", versions)
    assert resolve("w_2026_43", versions)["lsst-ctrl-new"] == "30.2026.4300"
    assert "w_2026_42" not in buildable_tags(versions)


def test_buildable_tags_order():
    tags = buildable_tags(VERSIONS)
    assert tags[:3] == ["w_2026_43", "w_2026_42", "w_2026_41"]
    assert tags.index("v30_0_1") < tags.index("v30_0_0")
    assert "v29_2_1" in tags and "v29_2_0" not in tags  # butler has no 29.2.0


def test_installable_versions_filters_python_and_wheels():
    releases = {
        "1.0": [{"filename": "x-1.0-py3-none-any.whl", "requires_python": ">=3.12"}],
        "0.9": [{"filename": "x-0.9-cp311-cp311-manylinux_2_28_x86_64.whl", "requires_python": ">=3.10"}],
        "0.8": [{"filename": "x-0.8.tar.gz", "requires_python": ">=3.10"}],
        "0.7": [{"filename": "x-0.7-cp313-cp313-manylinux_2_28_x86_64.whl", "requires_python": None}],
        "0.6": [{"filename": "x-0.6-py3-none-any.whl", "yanked": True}],
    }
    assert sorted(installable_versions(releases, "3.13")) == ["0.7", "1.0"]
    assert sorted(installable_versions(releases, "3.11")) == ["0.9"]


def test_stack_labels():
    labels = images.stack_labels(
        "w_2026_43", {"lsst-utils": "30.2026.4300", "lsst-daf-butler": "30.2026.4300"},
        datetime.date(2026, 11, 26), "stackhub/lsst-stack-base:abc",
    )
    assert labels["stackhub.image"] == "lsst-stack"
    assert labels["stackhub.tag"] == "w_2026_43"
    assert labels["stackhub.class"] == "weekly"
    assert json.loads(labels["stackhub.versions"]) == {"lsst-daf-butler": "30.2026.4300", "lsst-utils": "30.2026.4300"}
    assert labels["stackhub.build-date"] == "2026-11-26"
    assert images.stack_labels("v30_0_0", {}, datetime.date.today(), "x")["stackhub.class"] == "release"


def test_up_to_date_ignores_build_date_only():
    want = images.stack_labels("w_2026_43", {"a": "1"}, datetime.date(2026, 11, 26), "s:1")
    old = dict(want, **{"stackhub.build-date": "2026-01-01"})
    assert images.up_to_date(old, want)
    assert not images.up_to_date(dict(old, **{"stackhub.shared": "s:2"}), want)
    assert not images.up_to_date(None, want)


def test_plan_defaults_and_recommended():
    assert images.make_plan([], "w_2026_43").tags == images.DEFAULT_TAGS
    assert images.make_plan(["w_2026_41", "w_2026_41"], "w_2026_43").tags == ("w_2026_41", "w_2026_43")
    assert images.make_plan(["w_2026_41"], None).tags == ("w_2026_41",)


def test_commit_changes_carry_no_build_paths():
    changes = images.runtime_changes(env={"STACKHUB_STACK_TAG": "w_2026_43"}, labels={"stackhub.versions": '{"a":"1"}'})
    assert 'CMD ["stackhub-start"]' in changes and "USER lsst" in changes
    assert 'LABEL "stackhub.versions"="{\\"a\\":\\"1\\"}"' in changes
    assert not any("/mnt" in c or "ca.pem" in c for c in changes)


def test_inputs_hash_is_stable_and_sensitive():
    a = images.inputs_hash([("x", b"1"), ("y", b"2")])
    assert a == images.inputs_hash([("y", b"2"), ("x", b"1")])
    assert a != images.inputs_hash([("x", b"1"), ("y", b"3")])


def test_pypi_unreachable_says_so_and_names_the_ca_option():
    from spawner.build.stack_versions import PyPIUnavailable, fetch_versions

    with pytest.raises(PyPIUnavailable) as err:
        fetch_versions(["lsst-utils"], index="https://127.0.0.1:9/pypi", timeout=5)
    assert "unreachable" in str(err.value) and "--ca-bundle" in str(err.value) and "CA_BUNDLE=" in str(err.value)


def test_pypi_certificate_refused_names_the_ca_option(monkeypatch):
    import ssl
    import urllib.error
    import urllib.request

    from spawner.build.stack_versions import PyPIUnavailable, fetch_versions

    def refuse(*a, **k):
        raise urllib.error.URLError(ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(PyPIUnavailable, match="refused our TLS check.*--ca-bundle"):
        fetch_versions(["lsst-utils"])


def test_only_shared_layers_no_tag_uses_are_stale():
    from spawner.build.images import stale_shared

    shared = ["stackhub/lsst-stack-base:aaa", "stackhub/lsst-stack-base:bbb", "stackhub/lsst-stack-base:ccc"]
    tags = [{"stackhub.shared": "stackhub/lsst-stack-base:bbb"}, {"stackhub.shared": "stackhub/lsst-stack-base:bbb"},
            {"stackhub.shared": "stackhub/lsst-stack-base:ccc"}, {}]
    assert stale_shared(shared, tags) == ["stackhub/lsst-stack-base:aaa"]


def test_repository_option_names_a_repository_or_is_refused(capsys):
    import pytest

    p = images._parser()
    assert p.parse_args(["build"]).repository == "stackhub/lsst-stack"
    assert p.parse_args(["build", "--repository", "me-dev/lsst-stack"]).repository == "me-dev/lsst-stack"
    for bad in ("Me/Stack", "a/b:tag", "/abs", "a//b", "x" * 201):
        with pytest.raises(SystemExit):
            p.parse_args(["build", "--repository", bad])
        assert "is not an image repository name" in capsys.readouterr().err


def test_if_stale_skips_pypi_only_when_every_tag_is_on_the_current_shared_layer(monkeypatch):
    from types import SimpleNamespace

    import docker

    refs: dict[str, dict] = {"stackhub/base:trixie": {}}

    def get(ref):
        if ref not in refs:
            raise docker.errors.ImageNotFound(ref)
        return SimpleNamespace(id="sha256:" + ref, labels=refs[ref])

    client = SimpleNamespace(images=SimpleNamespace(get=get))
    monkeypatch.setattr(images, "_client", lambda: client)
    shared = images.shared_ref(client, "stackhub/base:trixie", "me/stack-base")
    plan = images.make_plan(["w_2026_43", "w_2026_42"], "w_2026_43")
    logged = []
    assert not images.current_without_pypi(plan, "me/stack", logged.append)  # nothing built yet
    for tag in plan.tags:
        refs[f"me/stack:{tag}"] = {"stackhub.tag": tag, "stackhub.shared": shared}
    assert not images.current_without_pypi(plan, "me/stack", logged.append)  # no recommended alias
    refs["me/stack:recommended"] = refs["me/stack:w_2026_43"]
    assert images.current_without_pypi(plan, "me/stack", logged.append)
    assert logged == [f"me/stack: w_2026_43, w_2026_42 up to date (shared layer {shared})"]
    refs["me/stack:w_2026_42"] = {"stackhub.tag": "w_2026_42", "stackhub.shared": "me/stack-base:older"}
    assert not images.current_without_pypi(plan, "me/stack", logged.append)  # an image of an older recipe
    assert images.shared_ref(client, "stackhub/base:trixie", "me/stack-base") == shared  # stable
    assert shared.startswith("me/stack-base:")
