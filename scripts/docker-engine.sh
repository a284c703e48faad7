#!/usr/bin/env bash
# Make sure a Docker engine answers; install and start one when none does.
#
# Used by `make up`, `make test` and .ci/run. On a machine where an engine already runs
# (Docker Desktop, a systemd-managed dockerd) it does nothing. Otherwise it installs
# Debian's docker.io and debootstrap (root only) and starts dockerd in the background, logging to
# $STACKHUB_STATE/dockerd.log.
set -euo pipefail

state=${STACKHUB_STATE:-$(cd "$(dirname "$0")/.." && pwd)/var}
mkdir -p "$state"

if docker info >/dev/null 2>&1; then
  exit 0
fi

# debootstrap comes along: with no registry the base image is bootstrapped from Debian packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "stackhub: no Docker engine answers and ${missing[*]} is not installed; install it (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "stackhub: installing Debian's ${missing[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  echo "stackhub: no Docker engine answers; start dockerd (it needs root)" >&2
  exit 1
fi

# its own session: the engine outlives the shell (or CI job) that started it, and a signal to that
# job's process group does not reach it
echo "stackhub: starting dockerd (log: $state/dockerd.log) ..."
setsid nohup dockerd >"$state/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "stackhub: Docker engine ready"
    exit 0
  fi
  sleep 1
done
echo "stackhub: dockerd did not answer within 60 s; last lines of $state/dockerd.log:" >&2
tail -n 20 "$state/dockerd.log" >&2
exit 1
