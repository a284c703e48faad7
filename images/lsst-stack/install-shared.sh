#!/bin/bash
# Runs once in a build container (see spawner/build/images.py): /mnt holds this script, the constraints,
# the requirements and, only when given, ca.pem; /mnt is a bind mount, so none of it is committed.
set -euo pipefail
if [ -f /mnt/ca.pem ]; then export PIP_CERT=/mnt/ca.pem; fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
env=/opt/lsst/software/stack/env
"$env/bin/pip" install -c /mnt/constraints.txt -r /mnt/requirements.txt
# jsonschema's optional IRI checker compiles ~35 Lark parsers at import time: ~0.9 s of CPU in
# every JupyterLab start (jupyter_events imports the format checker). No Jupyter schema uses the
# iri formats, and jsonschema skips the checker when the module is absent. A burst of spawns on
# a small host is CPU-bound, so this is taken out (bench/RESULTS-spawn.md).
"$env/bin/pip" uninstall -y -q rfc3987-syntax
# Only the LSST kernel: no plain python3 kernel next to it.
rm -rf "$env/share/jupyter/kernels/python3"
# What the per-tag step must not change (it installs with -c shared-freeze.txt).
"$env/bin/pip" freeze --all --exclude-editable > /opt/lsst/software/stack/shared-freeze.txt
find "$env" -name __pycache__ -path '*/tests/*' -prune -exec rm -rf {} + 2>/dev/null || true
