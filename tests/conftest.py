import pytest


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", help="rewrite golden files from the current output")


def pytest_collection_modifyitems(config, items):
    """`k8s` tests build and run a Kubernetes node (scripts/k8s-node.sh): they run only when a -m
    expression names them, and are reported as deselected otherwise (not part of `make test` yet)."""
    if "k8s" in (config.option.markexpr or ""):
        return
    k8s = [item for item in items if item.get_closest_marker("k8s")]
    if k8s:
        config.hook.pytest_deselected(items=k8s)
        items[:] = [item for item in items if not item.get_closest_marker("k8s")]
