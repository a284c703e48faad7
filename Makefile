# stackhub: `make up` runs the hub on this machine; `make test` runs the test suite.
# Variables: TAGS (stack tags to build), CA_BUNDLE (CA file for builds behind a TLS-intercepting
# proxy), RECOMMENDED (tag the `recommended` alias points to), STACKHUB_CONFIG (stackhub.yaml),
# BACKEND (docker or swarm; default: spawner.backend of the config).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TAGS ?=
RECOMMENDED ?= w_2026_43
CA_BUNDLE ?=
IMAGE_OPTS := $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE)) --recommended $(RECOMMENDED)
PYTEST_ARGS ?=
BACKEND ?=
BACKEND_OPT := $(if $(BACKEND),--backend $(BACKEND))

.PHONY: up down token images hub-image gateway-image stack-images engine venv helm test test-unit test-k8s status clean-test hpc-tools bench bench-prewarm

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

engine:
	@./scripts/docker-engine.sh

## images: build the default stack tags (or TAGS="w_2026_41 ...") and the hub image
images: venv engine
	$(PY) -m spawner.build.images build $(IMAGE_OPTS) $(TAGS)
	$(PY) -m spawner.build.images build-hub $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

# builds the stack images whose recipe changed (or that are missing); a no-op, with no PyPI
# lookup, when every tag is an image of the current recipe (named by its inputs' hash)
stack-images: venv engine
	$(PY) -m spawner.build.images build --if-stale $(IMAGE_OPTS) $(TAGS)

## hpc-tools: what `stackhub images export` needs: mksquashfs (Debian's squashfs-tools) and siftool
## (the SIF reference implementation, built from the Go module proxy into var/tools/bin)
SIFTOOL := var/tools/bin/siftool
hpc-tools: $(SIFTOOL)
	@command -v mksquashfs >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq squashfs-tools >/dev/null; } \
	  || { echo "stackhub: mksquashfs is missing: apt-get install squashfs-tools" >&2; exit 1; }

$(SIFTOOL):
	@command -v go >/dev/null || { echo "stackhub: siftool is built with Go (go install); install Go first" >&2; exit 1; }
	GOBIN=$(CURDIR)/var/tools/bin go install github.com/apptainer/sif/v2/cmd/siftool@v2.25.0

hub-image: venv engine
	$(PY) -m spawner.build.images build-hub $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

## gateway-image: stackhub/dask-gateway (dask-gateway-server + traefik) for the chart's
## spawner.backend.daskGateway; traefik is built once from the Go module proxy (several minutes cold)
gateway-image: venv engine
	$(PY) -m spawner.build.images build-gateway $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

## up: start the Docker engine if needed, build what is missing, start hub + proxy
up: stack-images hub-image
	$(PY) -m spawner.cli.main up $(BACKEND_OPT)

## down: stop hub, proxy and user servers (homes and hub state are kept)
down: venv
	$(PY) -m spawner.cli.main down $(BACKEND_OPT)

## token: print an admin API token (last line)
token: venv
	@$(PY) -m spawner.cli.main token

## helm: helm v3.22.0 for the chart's offline tests (built once from the Go module proxy, ~70 s)
helm:
	@./scripts/k8s-node.sh helm >/dev/null

## test: the whole suite (unit, then real-engine integration, browser and Kubernetes tests; the
## Kubernetes node is built on the first run, ~9 min, and brought down again at the end)
test: venv engine stack-images hub-image gateway-image helm hpc-tools
	STACKHUB_K8S_TESTS=1 $(PY) -m pytest -ra $(PYTEST_ARGS)

## test-k8s: only the Kubernetes tests (the node smoke test and the Helm chart on it)
test-k8s: venv engine stack-images hub-image gateway-image
	./scripts/k8s-node.sh up
	$(PY) -m pytest -ra -m k8s tests/integration/test_k8s_node.py tests/integration/test_k8s_helm.py

test-unit: venv helm
	$(PY) -m pytest -ra -m "not engine and not browser" tests/unit

## bench: N attendees against stackhub and stock JupyterHub + DockerSpawner, interleaved (bench/RESULTS-load.md)
##   make bench N=10 ROUNDS=2 | make bench N=100 WINDOW=60 | make bench BASELINE=none (stackhub alone)
##   make bench-prewarm N=100 WINDOW=60: the admin pre-warms N servers, then login → lab (stackhub alone)
N ?= 10
WINDOW ?= 0
ROUNDS ?= 2
BASELINE ?= stock
BENCH_ARGS ?=
bench: venv engine stack-images hub-image
	$(PY) -m bench.load --users $(N) --window $(WINDOW) --rounds $(ROUNDS) \
	  --targets $(if $(filter none,$(BASELINE)),stackhub,stackhub,$(BASELINE)) $(BENCH_ARGS)

bench-prewarm: venv engine stack-images hub-image
	$(PY) -m bench.load --users $(N) --window $(WINDOW) --rounds $(ROUNDS) --targets stackhub --prewarm $(BENCH_ARGS)
