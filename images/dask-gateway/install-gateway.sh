#!/bin/bash
# Runs once in a build container (spawner/build/images.py build_gateway): /mnt is a bind mount
# holding this script, the constraints, the traefik binary (scripts/k8s-node.sh traefik) and, only
# when given, ca.pem; nothing of /mnt is committed.
set -euo pipefail
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
[ -f /mnt/ca.pem ] && export PIP_CERT=/mnt/ca.pem
/opt/dask-gateway/bin/pip install -c /mnt/constraints.txt 'dask-gateway-server[kubernetes]'
install -m 0755 /mnt/traefik /usr/local/bin/traefik
rm -rf /root/.cache /tmp/*
dask-gateway-server --version
traefik version
