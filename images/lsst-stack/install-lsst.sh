#!/bin/bash
# Runs once per tag in a build container from the shared image (see spawner/build/images.py): installs
# the pinned LSST packages into their own prefix, so `unsetup lsst_distrib` really takes them away,
# and nothing of the shared layer changes (-c shared-freeze.txt).
set -euo pipefail
if [ -f /mnt/ca.pem ]; then export PIP_CERT=/mnt/ca.pem; fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
stack=/opt/lsst/software/stack
"$stack/env/bin/pip" install --prefix "$stack/lsst_distrib" \
  -c /mnt/constraints.txt -c "$stack/shared-freeze.txt" -r /mnt/pins.txt
cp /mnt/versions.json "$stack/lsst_distrib/versions.json"
