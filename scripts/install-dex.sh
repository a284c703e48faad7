#!/usr/bin/env bash
# Build Dex (https://dexidp.io, the OpenID Connect provider) from the Go module proxy, once.
#
# The OAuth end-to-end tests log in through a real Dex. Dex's module has a `replace` directive
# (its api/v2 module lives in its own tree), so `go install dex@version` refuses it; this script
# does what `go install` would: download the pinned module and its api/v2 module through the Go
# module proxy, point the replace at the downloaded api/v2, and build a static binary.
#
#   scripts/install-dex.sh            # prints the path of the binary (builds it if missing)
#   DEX_BIN=/path/to/dex scripts/...  # build to another path
#
# Idempotent: an existing binary of the pinned version is reused (about 3 minutes to build on 2 cores).
set -euo pipefail

# master of 2026-08-06: the first Dex with groups on static passwords (the e2e users need groups);
# Dex's release tags are not usable as Go module versions (module path without /v2).
DEX_VERSION="${DEX_VERSION:-v0.0.0-20260806151424-ab64ed778070}"
DEX_API_VERSION="${DEX_API_VERSION:-v2.4.1-0.20260806151424-ab64ed778070}"  # api/v2 at the same commit

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEX_BIN:-$here/var/dex/dex-$DEX_VERSION}"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "install-dex: Go is needed (https://go.dev/dl or Debian's golang-go)" >&2; exit 1; }

moddir() { go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'; }

work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
echo "install-dex: downloading github.com/dexidp/dex@$DEX_VERSION" >&2
src="$(cd "$work" && moddir "github.com/dexidp/dex@$DEX_VERSION")"
api="$(cd "$work" && moddir "github.com/dexidp/dex/api/v2@$DEX_API_VERSION")"
[[ -d "$src" && -d "$api" ]] || { echo "install-dex: download failed" >&2; exit 1; }

# the module cache is read-only: build from a copy
cp -r "$src" "$work/dex"
chmod -R u+w "$work/dex"
cd "$work/dex"
go mod edit -replace "github.com/dexidp/dex/api/v2=$api"
echo "install-dex: building (CGO off: Dex runs with its in-memory storage here)" >&2
mkdir -p "$(dirname "$bin")"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$DEX_VERSION" \
  -o "$bin.tmp" ./cmd/dex
mv "$bin.tmp" "$bin"   # static, with its web templates embedded: runs in any container
echo "$bin"
