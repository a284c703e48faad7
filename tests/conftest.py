import os

import pytest

from bench import localhost

# user servers answer at <user>.users.localhost (subdomain mode); Python's resolver needs telling
localhost.install()


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", help="rewrite golden files from the current output")


def pytest_collection_modifyitems(config, items):
    """`k8s` tests build and run a Kubernetes node (scripts/k8s-node.sh: ~9 min cold, ~10 s when
    built): they run when a -m expression names them or STACKHUB_K8S_TESTS=1 (`make test` sets it),
    and are reported as deselected otherwise."""
    if "k8s" in (config.option.markexpr or "") or os.environ.get("STACKHUB_K8S_TESTS") == "1":
        return
    k8s = [item for item in items if item.get_closest_marker("k8s")]
    if k8s:
        config.hook.pytest_deselected(items=k8s)
        items[:] = [item for item in items if not item.get_closest_marker("k8s")]
