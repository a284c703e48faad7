#!/bin/bash
# Runs once in a build container (see spawner/build/images.py build_hub): /mnt is a bind mount holding
# this script, the constraints and, only when given, ca.pem; nothing of /mnt is committed.
set -euo pipefail
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
npm_ca=()
if [ -f /mnt/ca.pem ]; then
  export PIP_CERT=/mnt/ca.pem
  npm_ca=(--cafile=/mnt/ca.pem)
fi
cd /srv/stackhub
# a copy of the source, so no build/ or *.egg-info is left in /srv/stackhub
src=$(mktemp -d)
cp -r pyproject.toml spawner "$src/"
/opt/stackhub/bin/pip install -c constraints.txt "$src" oauthenticator jupyterhub-idle-culler dockerspawner
rm -rf "$src"
# the same slow-importing IRI checker as in the stack image (images/lsst-stack/install-shared.sh)
/opt/stackhub/bin/pip uninstall -y -q rfc3987-syntax
npm install -g --no-fund --no-audit "${npm_ca[@]}" configurable-http-proxy@5.3.0
npm cache clean --force 2>/dev/null || true
rm -rf /root/.npm /root/.cache /tmp/*
configurable-http-proxy --version
