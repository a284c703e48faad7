#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, for the Kubernetes backend's tests and benchmarks.
#
#   scripts/k8s-node.sh up            build what is missing, start the node, wait until it runs pods
#   scripts/k8s-node.sh down          stop everything `up` started, clean its interfaces and rules
#   scripts/k8s-node.sh status        component health (exit 1 when something is down)
#   scripts/k8s-node.sh load IMAGE..  copy Docker images into the node's containerd (skips unchanged)
#   scripts/k8s-node.sh env           `eval "$(scripts/k8s-node.sh env)"` sets KUBECONFIG and PATH
#   scripts/k8s-node.sh build         only the builds (what `up` does first)
#   scripts/k8s-node.sh helm          build helm alone if missing (~70 s cold); print its path
#   scripts/k8s-node.sh traefik       build traefik (dask-gateway's proxy) if missing; print its path
#
# Everything is built from the Go module proxy (no registry is reachable here) and kept out of the
# repository, under $STACKHUB_K8S_HOME (default /var/lib/stackhub-k8s): binaries keyed by version in
# bin/, logs in log/. It runs its own containerd (own socket, root and state) next to Docker's and
# never touches Docker's. See docs/kubernetes-node.md.
set -euo pipefail   # (so never `producer | grep -q`: grep's early exit fails the pipe)

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
COREDNS_VERSION=v1.12.1
HELM_VERSION=v3.22.0
TRAEFIK_VERSION=v3.6.12   # helm/stackhub/crds/traefik.yaml holds this version's CRDs
NETPOL_VERSION=v0.8.0     # sigs.k8s.io/kube-network-policies: enforces NetworkPolicies (nftables + nfqueue)

HOME_DIR=${STACKHUB_K8S_HOME:-/var/lib/stackhub-k8s}
RUN_DIR=${STACKHUB_K8S_RUN:-/run/stackhub-k8s}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AUX=$HERE/k8s-node

NODE_NAME=stackhub-node
BRIDGE=stackhub-k8s0          # the pods' bridge (the CNI bridge plugin adopts it)
NODE_IP=10.244.0.1            # on $BRIDGE: apiserver, kubelet and DNS listen here (host-internal)
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
PAUSE_IMAGE=stackhub.local/pause:1.0
CNI_NAME=stackhub-k8s

GO=${GO:-/usr/local/go/bin/go}
BIN=$HOME_DIR/bin
K8S_BIN=$BIN/kubernetes-$K8S_VERSION
ETCD_BIN=$BIN/etcd-$ETCD_VERSION
COREDNS_BIN=$BIN/coredns-$COREDNS_VERSION
HELM_BIN=$BIN/helm-$HELM_VERSION
TRAEFIK_BIN=$BIN/traefik-$TRAEFIK_VERSION
NETPOL_BIN=$BIN/kube-network-policies-$NETPOL_VERSION-$(cat "$AUX/netpol/"* | sha256sum | cut -c1-12)
NETPOL=${STACKHUB_K8S_NETPOL:-1}   # 0: no NetworkPolicy enforcement (the bridge CNI alone has none)
PAUSE_DIR=$BIN/pause-$(sha256sum "$AUX/pause/main.go" "$AUX/mkimage.py" | sha256sum | cut -c1-12)
BUILD=$HOME_DIR/build
LOG=$HOME_DIR/log
PKI=$HOME_DIR/pki
ETC=$HOME_DIR/etc
PIDS=$RUN_DIR/pids
CTR_SOCK=$RUN_DIR/containerd/containerd.sock
KUBECONFIG_ADMIN=$ETC/admin.kubeconfig
API_URL=https://$NODE_IP:$API_PORT

K8S_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl stackhub-cri)
# components in start order; `down` stops them in reverse
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kube-network-policies)

T0=$SECONDS
log() { printf '[k8s-node %4ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
  printf '[k8s-node %4ss] ERROR: %s\n' "$((SECONDS - T0))" "$*" >&2
  [ "${CMD:-}" = up ] && echo "(logs: $LOG; '$0 down' stops what was started)" >&2
  exit 1
}
# step NAME CMD...: run one step, print its start and its duration
step() {
  local name=$1 t=$SECONDS; shift
  log "$name ..."
  CACHED=0
  "$@"
  [ "$CACHED" = 1 ] || log "$name: done in $((SECONDS - t)) s"
}
cached() { CACHED=1; log "  cached: $1"; }  # a build step found its output already there

need_root() { [ "$(id -u)" = 0 ] || die "needs root (it runs containerd, the kubelet and network setup)"; }
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
install_packages() {
  local missing=() p
  for p in containerd runc containernetworking-plugins nftables iptables conntrack openssl curl python3; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed"* ]] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    CACHED=1; log "  all installed"
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # --no-install-recommends: Debian's containerd is wanted as a binary only; its systemd unit does
  # not start here (no systemd), and this script never uses /run/containerd.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Builds from the Go module proxy (cached under $BIN, rebuilt only when missing)
# ---------------------------------------------------------------------------------------------
go_env() {
  export GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 GO111MODULE=on
  export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
  [ -x "$GO" ] || die "Go not found at $GO (set GO=/path/to/go)"
}

# report failed module downloads from `go mod download -json` output: module, version, the proxy's answer
report_download_errors() {
  python3 -c '
import json, sys
data, dec, i, bad = sys.stdin.read(), json.JSONDecoder(), 0, 0
while True:
    while i < len(data) and data[i].isspace():
        i += 1
    if i >= len(data):
        break
    o, i = dec.raw_decode(data, i)
    if o.get("Error"):
        bad += 1
        print("  download failed: module %s version %s\n    proxy answered: %s"
              % (o.get("Path"), o.get("Version"), o["Error"].replace("\n", "\n    ")), file=sys.stderr)
sys.exit(1 if bad else 0)'
}

# go_download MODULE VERSION: fetch one module zip; print its directory
go_download() {
  local out
  out=$(cd "$BUILD" && "$GO" mod download -json "$1@$2" 2>"$LOG/download.err") || true
  if [ -z "$out" ]; then
    cat "$LOG/download.err" >&2
    die "could not download $1@$2 from $GOPROXY (no answer; the go command's error is above)"
  fi
  if ! printf '%s' "$out" | report_download_errors; then
    die "could not download $1@$2 from $GOPROXY"
  fi
  printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

# go_run_logged LOGFILE WHAT CMD...: run a go command; on failure show the download errors it met
go_run_logged() {
  local logf=$1 what=$2; shift 2
  local pid n=0 rc=0
  "$@" >"$logf" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do  # a line a minute, so that a long build shows it is alive
    sleep 1
    n=$((n + 1))
    [ $((n % 60)) = 0 ] && log "  ... $what: ${n} s"
  done
  wait "$pid" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "---- $what failed; last lines of $logf:" >&2
    tail -n 25 "$logf" >&2
    if grep -qE 'reading https?://|server response|not available|unrecognized import path' "$logf"; then
      echo "---- module downloads that failed (module@version: the proxy's answer):" >&2
      grep -E -A3 'reading https?://|not available|unrecognized import path' "$logf" | head -40 >&2
    fi
    die "$what failed"
  fi
}

build_kubernetes() {
  local t missing=0
  for t in "${K8S_TOOLS[@]}"; do [ -x "$K8S_BIN/$t" ] || missing=1; done
  if [ $missing = 0 ]; then cached "$K8S_BIN"; return; fi
  local src b=$BUILD/kubernetes-$K8S_VERSION staging_version=v0.${K8S_VERSION#v1.}
  src=$(go_download k8s.io/kubernetes "$K8S_VERSION")
  rm -rf "$b"
  cp -r "$src" "$b"
  chmod -R u+w "$b"
  # The module zip has no nested staging modules: no workspace, and the 31 ./staging replaces point
  # at the published k8s.io/<name> v0.34.x modules instead.
  rm -f "$b/go.work" "$b/go.work.sum"
  sed -i -E "s#=> \./staging/src/(k8s\.io/[A-Za-z0-9._-]+)#=> \1 $staging_version#" "$b/go.mod"
  if grep -q '=> ./staging' "$b/go.mod"; then die "go.mod of $b still has ./staging replaces"; fi
  log "  $(grep -c "=> k8s.io/.* $staging_version" "$b/go.mod") staging replaces -> k8s.io/<name> $staging_version"
  mkdir -p "$b/cmd/stackhub-cri"
  cp "$AUX/nodecri/main.go" "$b/cmd/stackhub-cri/main.go"
  local dl
  dl=$(cd "$b" && "$GO" mod download -json 2>/dev/null) || true
  printf '%s' "$dl" | report_download_errors || die "module downloads for kubernetes $K8S_VERSION failed"
  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w" p
  for p in $pkg $cgo; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=() out=$K8S_BIN.tmp
  for t in "${K8S_TOOLS[@]}"; do pkgs+=("./cmd/$t"); done
  rm -rf "$out"; mkdir -p "$out"
  log "  go build ${K8S_TOOLS[*]} (several minutes; log: $LOG/build-kubernetes.log)"
  (cd "$b" && go_run_logged "$LOG/build-kubernetes.log" "kubernetes build" \
    "$GO" build -mod=mod -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}")
  rm -rf "$K8S_BIN"; mv "$out" "$K8S_BIN"
  rm -rf "$b"
}

# build_small NAME MODULE VERSION OUTDIR BINARY: a tiny main (scripts/k8s-node/NAME) importing MODULE
build_small() {
  local name=$1 mod=$2 ver=$3 outdir=$4 binary=$5
  if [ -x "$outdir/$binary" ]; then cached "$outdir/$binary"; return; fi
  go_download "$mod" "$ver" >/dev/null
  local b=$BUILD/$name-$ver
  rm -rf "$b"; mkdir -p "$b"
  cp "$AUX/$name/main.go" "$b/"
  printf 'module stackhub.local/%s\n\ngo 1.24\n\nrequire %s %s\n' "$name" "$mod" "$ver" >"$b/go.mod"
  log "  resolving $name's dependencies (log: $LOG/build-$name.log)"
  (cd "$b" && go_run_logged "$LOG/build-$name.log" "$name: go mod tidy" "$GO" mod tidy)
  local dl
  dl=$(cd "$b" && "$GO" mod download -json 2>/dev/null) || true
  printf '%s' "$dl" | report_download_errors || die "module downloads for $name $ver failed"
  log "  go build $name"
  rm -rf "$outdir.tmp"; mkdir -p "$outdir.tmp"
  (cd "$b" && go_run_logged "$LOG/build-$name.log" "$name build" \
    "$GO" build -trimpath -ldflags "-s -w" -o "$outdir.tmp/$binary" .)
  rm -rf "$outdir"; mv "$outdir.tmp" "$outdir"
  rm -rf "$b"
}

build_helm() {
  if [ -x "$HELM_BIN/helm" ]; then cached "$HELM_BIN/helm"; return; fi
  local src cgv major minor
  src=$(go_download helm.sh/helm/v3 "$HELM_VERSION")
  # helm's own Makefile stamps the Kubernetes version of its client-go (for `helm template`/lint)
  cgv=$(awk '$1 == "k8s.io/client-go" {print $2}' "$src/go.mod")
  major=1; minor=${cgv#v0.}; minor=${minor%%.*}
  log "  go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (client-go $cgv; log: $LOG/build-helm.log)"
  rm -rf "$HELM_BIN.tmp"; mkdir -p "$HELM_BIN.tmp"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  (cd "$BUILD" && GOBIN="$HELM_BIN.tmp" go_run_logged "$LOG/build-helm.log" "helm build" \
    "$GO" install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  rm -rf "$HELM_BIN"; mv "$HELM_BIN.tmp" "$HELM_BIN"
}

# traefik for dask-gateway's image (spawner/build/images.py build-gateway). `go install @version`
# refuses the module (its go.mod has replace directives): build ./cmd/traefik in a copy of it. The
# web dashboard is not built (its placeholder embed directory is in the module; the chart turns the
# dashboard off).
build_traefik() {
  if [ -x "$TRAEFIK_BIN/traefik" ]; then cached "$TRAEFIK_BIN/traefik"; return; fi
  local src b=$BUILD/traefik-$TRAEFIK_VERSION
  src=$(go_download github.com/traefik/traefik/v3 "$TRAEFIK_VERSION")
  rm -rf "$b"; cp -r "$src" "$b"; chmod -R u+w "$b"
  log "  go build ./cmd/traefik $TRAEFIK_VERSION (several minutes cold; log: $LOG/build-traefik.log)"
  rm -rf "$TRAEFIK_BIN.tmp"; mkdir -p "$TRAEFIK_BIN.tmp"
  local ld="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
  (cd "$b" && go_run_logged "$LOG/build-traefik.log" "traefik build" \
    "$GO" build -mod=mod -trimpath -ldflags "$ld" -o "$TRAEFIK_BIN.tmp/traefik" ./cmd/traefik)
  rm -rf "$TRAEFIK_BIN"; mv "$TRAEFIK_BIN.tmp" "$TRAEFIK_BIN"
  rm -rf "$b"
}

# kube-network-policies (the NetworkPolicy controller Kubernetes' own CI runs with kindnet), built
# from a copy patched by scripts/k8s-node/netpol/patch.py: it runs as a host process, like CoreDNS,
# so it reads $KUBECONFIG (not the in-cluster config), and this kernel has xt_NFQUEUE but not
# nftables' native queue statement, so its verdicts use the compat target (xtqueue.go)
build_netpol() {
  if [ -x "$NETPOL_BIN/kube-network-policies" ]; then cached "$NETPOL_BIN/kube-network-policies"; return; fi
  local src b=$BUILD/kube-network-policies-$NETPOL_VERSION
  src=$(go_download sigs.k8s.io/kube-network-policies "$NETPOL_VERSION")
  rm -rf "$b"; cp -r "$src" "$b"; chmod -R u+w "$b"
  python3 "$AUX/netpol/patch.py" "$b" || die "kube-network-policies $NETPOL_VERSION: the patch does not apply"
  log "  go build kube-network-policies $NETPOL_VERSION (log: $LOG/build-netpol.log)"
  rm -rf "$NETPOL_BIN.tmp"; mkdir -p "$NETPOL_BIN.tmp"
  (cd "$b" && go_run_logged "$LOG/build-netpol.log" "kube-network-policies build" \
    "$GO" build -mod=mod -trimpath -ldflags "-s -w" -o "$NETPOL_BIN.tmp/kube-network-policies" ./cmd)
  rm -rf "$NETPOL_BIN"; mv "$NETPOL_BIN.tmp" "$NETPOL_BIN"
  rm -rf "$b"
}

build_pause() {
  if [ -f "$PAUSE_DIR/pause.tar" ]; then cached "$PAUSE_DIR/pause.tar"; return; fi
  rm -rf "$PAUSE_DIR.tmp"; mkdir -p "$PAUSE_DIR.tmp"
  (cd "$AUX/pause" && go_run_logged "$LOG/build-pause.log" "pause build" \
    "$GO" build -trimpath -ldflags "-s -w" -o "$PAUSE_DIR.tmp/pause" main.go)
  python3 "$AUX/mkimage.py" "$PAUSE_DIR.tmp/pause" "$PAUSE_IMAGE" "$PAUSE_DIR.tmp/pause.tar" >/dev/null
  rm -rf "$PAUSE_DIR"; mv "$PAUSE_DIR.tmp" "$PAUSE_DIR"
}

build_all() {
  go_env
  mkdir -p "$BUILD" "$BIN" "$LOG"
  step "build: kubernetes $K8S_VERSION" build_kubernetes
  step "build: etcd $ETCD_VERSION" build_small etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_BIN" etcd
  step "build: coredns $COREDNS_VERSION" build_small coredns github.com/coredns/coredns "$COREDNS_VERSION" "$COREDNS_BIN" coredns
  step "build: helm $HELM_VERSION" build_helm
  step "build: pause image" build_pause
  [ "$NETPOL" = 1 ] && step "build: kube-network-policies $NETPOL_VERSION" build_netpol
  return 0
}

# ---------------------------------------------------------------------------------------------
# PKI: a CA with critical basicConstraints/keyUsage, leaf certificates with key identifiers
# (Python 3.13's ssl module in pods refuses anything less)
# ---------------------------------------------------------------------------------------------
make_ca() {
  [ -f "$PKI/ca.crt" ] && return
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -sha256 -days 3650 -subj "/CN=stackhub-k8s-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -addext "subjectKeyIdentifier=hash" -out "$PKI/ca.crt"
}

# leaf NAME SUBJECT EKU [SAN]
leaf() {
  local name=$1 subj=$2 eku=$3 san=${4:-}
  [ -f "$PKI/$name.crt" ] && return
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  local ext=$PKI/$name.ext
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid:always"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  make_ca
  leaf apiserver "/CN=kube-apiserver" serverAuth \
    "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  leaf admin "/O=system:masters/CN=stackhub-admin" clientAuth
  leaf controller-manager "/CN=system:kube-controller-manager" clientAuth
  leaf scheduler "/CN=system:kube-scheduler" clientAuth
  leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  leaf kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  leaf kube-proxy "/CN=system:kube-proxy" clientAuth
  leaf coredns "/CN=stackhub:coredns" clientAuth
  leaf netpol "/CN=stackhub:kube-network-policies" clientAuth
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI"/*.key
}

# write_file PATH: stdin to PATH, only when the content differs (kube-proxy exits when its
# configuration file is touched, so a second `up` must not rewrite unchanged files)
write_file() {
  local tmp=$1.tmp.$$
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

# kubeconfig NAME CERT: a kubeconfig for one client certificate
kubeconfig() {
  local name=$1 cert=$2
  write_file "$ETC/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: stackhub-k8s
  cluster:
    server: $API_URL
    certificate-authority: $PKI/ca.crt
users:
- name: $cert
  user:
    client-certificate: $PKI/$cert.crt
    client-key: $PKI/$cert.key
contexts:
- name: stackhub-k8s
  context: {cluster: stackhub-k8s, user: $cert}
current-context: stackhub-k8s
EOF
  chmod 600 "$ETC/$name.kubeconfig"   # (write_file keeps an unchanged file as it is)
}

# ---------------------------------------------------------------------------------------------
# configuration files (rewritten on every `up`)
# ---------------------------------------------------------------------------------------------
write_configs() {
  mkdir -p "$ETC" "$ETC/cni" "$HOME_DIR/containerd" "$HOME_DIR/kubelet" "$HOME_DIR/cni-ipam" "$RUN_DIR/containerd"
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kubelet kubelet
  kubeconfig kube-proxy kube-proxy
  kubeconfig coredns coredns
  kubeconfig netpol netpol

  write_file "$ETC/containerd.toml" <<EOF
# the node's own containerd: nothing here is shared with Docker's
version = 2
root = "$HOME_DIR/containerd"
state = "$RUN_DIR/containerd/state"
oom_score = 0
[grpc]
  address = "$CTR_SOCK"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$HOME_DIR/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj below containerd's own
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true    # pod netns under our state dir, not /run/netns
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN_DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ETC/cni"
    max_conf_num = 1
EOF

  write_file "$ETC/cni/10-$CNI_NAME.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NAME",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$HOME_DIR/cni-ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF

  write_file "$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false            # this host has cgroup v1 (1.35+ refuses it by default)
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTR_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: /etc/resolv.conf
oomScoreAdj: 0                 # lowering it needs CAP_SYS_RESOURCE, which root lacks here
makeIPTablesUtilChains: false  # no KUBE-FIREWALL / canary chains in the host's tables
failSwapOn: false
staticPodPath: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
evictionHard: {memory.available: "200Mi", nodefs.available: "5%", imagefs.available: "5%"}
EOF

  write_file "$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables                 # its own nftables tables (ip/ip6 kube-proxy); Docker's rules untouched
clientConnection: {kubeconfig: $ETC/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
conntrack:                     # leave the host's conntrack settings alone
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

  write_file "$ETC/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $ETC/coredns.kubeconfig stackhub-k8s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . /etc/resolv.conf
    cache 30
    loop
    loadbalance
}
EOF

  write_file "$ETC/addons.yaml" <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "stackhub:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "stackhub:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "stackhub:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "stackhub:coredns"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "stackhub:kube-network-policies"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "stackhub:kube-network-policies"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "stackhub:kube-network-policies"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "stackhub:kube-network-policies"}
---
# CoreDNS runs as a host process on $NODE_IP:53; the usual kube-dns Service points at it
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: stackhub-k8s-node}
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------
pid_of() { # NAME: print the pid if that component runs
  local f=$PIDS/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  # guard against a recycled pid: the process must still be our binary
  [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") == *"$(basename "$1")"* ]] || return 1
  echo "$pid"
}

# start NAME BINARY ARGS...: start one component in the background (log: $LOG/NAME.log)
start() {
  local name=$1; shift
  STARTED=0
  if pid_of "$name" >/dev/null; then log "  $name already runs (pid $(pid_of "$name"))"; return; fi
  STARTED=1
  mkdir -p "$PIDS" "$LOG"
  echo "==== $(date -u +%FT%TZ) start: $*" >>"$LOG/$name.log"
  setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  log "  $name started (pid $!, log $LOG/$name.log)"
}

stop() { # NAME: SIGTERM, then SIGKILL after 20 s
  local name=$1 pid i
  pid=$(pid_of "$name") || { rm -f "$PIDS/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do
    [ -d "/proc/$pid" ] || break
    sleep 0.5
  done
  if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$PIDS/$name.pid"
  log "  $name stopped"
}

# wait_for WHAT SECONDS CMD...: poll until CMD succeeds; on timeout show the component's log
wait_for() {
  local what=$1 secs=$2 t=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - t)) -ge "$secs" ]; then
      echo "---- $what not ready after $secs s" >&2
      local c=${what%% *}; c=${c%:}
      [ -f "$LOG/$c.log" ] && { echo "---- last lines of $LOG/$c.log:" >&2; tail -n 30 "$LOG/$c.log" >&2; }
      die "$what did not become ready"
    fi
    sleep 0.5
  done
}

curl_api() { curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API_URL$1"; }

# ---------------------------------------------------------------------------------------------
# host setup the node needs (recorded, so that `down` can undo it)
# ---------------------------------------------------------------------------------------------
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

host_setup() {
  # the kubelet sets these kernel tunables; remember the host's values for `down`
  if [ ! -f "$RUN_DIR/sysctl.saved" ]; then
    local k
    for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$RUN_DIR/sysctl.saved"
  fi
  # the nftables tables that exist before the node: ip6tables-nft, run by the CNI plugins, creates
  # empty tables (e.g. `ip6 nat`) that `down` removes again when they are still empty
  [ -f "$RUN_DIR/nft-tables.saved" ] || nft list tables >"$RUN_DIR/nft-tables.saved"
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || die "net.ipv4.ip_forward is 0 (Docker normally sets it to 1)"
  if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    modprobe br_netfilter 2>/dev/null || die "br_netfilter is not loaded and cannot be loaded (Services between pods need it)"
  fi
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ] || die "net.bridge.bridge-nf-call-iptables is 0"
  # The bridge exists before any pod, so that the apiserver and kubelet can listen on $NODE_IP.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  [[ $(ip -o -4 addr show dev "$BRIDGE") == *" $NODE_IP/"* ]] || ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # $NODE_IP is a host address, so anything routed to the host (Docker containers included) could
  # reach the apiserver, kubelet and DNS there: only the host itself and the pods may. The node's
  # own nftables table; `down` deletes it.
  nft delete table ip stackhub-k8s 2>/dev/null || true
  nft -f - <<EOF
table ip stackhub-k8s {
  chain input {
    type filter hook input priority filter; policy accept;
    ip daddr $NODE_IP iifname != { "lo", "$BRIDGE" } counter drop comment "node services: host and pods only"
  }
}
EOF
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------
start_containerd() {
  start containerd containerd --config "$ETC/containerd.toml"
  wait_for "containerd socket" 30 ctr --address "$CTR_SOCK" version
  if ! grep -q " $PAUSE_IMAGE\$" <<<"$("$K8S_BIN/stackhub-cri" "$CTR_SOCK" images 2>/dev/null)"; then
    ctr --address "$CTR_SOCK" -n k8s.io images import "$PAUSE_DIR/pause.tar" >/dev/null
    log "  imported the pause image $PAUSE_IMAGE"
  fi
}

start_etcd() {
  mkdir -p "$HOME_DIR/etcd"; chmod 700 "$HOME_DIR/etcd"
  start etcd "$ETCD_BIN/etcd" --name "$NODE_NAME" --data-dir "$HOME_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --log-level warn
  wait_for "etcd health" 60 curl -sf --max-time 2 http://127.0.0.1:2379/health
}

start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction,PodSecurity \
    --profiling=false --v=1
  wait_for "kube-apiserver readyz" 120 curl_api /readyz
}

start_controllers() {
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$ETC/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$ETC/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$ETC/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --use-service-account-credentials=true \
    --enable-hostpath-provisioner=true --profiling=false --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$ETC/scheduler.kubeconfig" \
    --authentication-kubeconfig="$ETC/scheduler.kubeconfig" \
    --authorization-kubeconfig="$ETC/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
  wait_for "kube-controller-manager healthz" 60 curl -skf --max-time 2 https://127.0.0.1:10257/healthz
  wait_for "kube-scheduler healthz" 60 curl -skf --max-time 2 https://127.0.0.1:10259/healthz
}

node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# node_ready_since EPOCH: Ready, as reported by a kubelet heartbeat not older than EPOCH (after a
# restart the Node object still shows the previous run's Ready for a while)
node_ready_since() {
  local beat
  node_ready || return 1
  beat=$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [ -n "$beat" ] && [ "$(date -u -d "$beat" +%s)" -ge "$1" ]
}

start_kubelet() {
  local since
  since=$(date -u +%s)
  start kubelet "$K8S_BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --root-dir="$HOME_DIR/kubelet" --cert-dir="$HOME_DIR/kubelet/pki" \
    --containerd="$CTR_SOCK" --v=1  # cadvisor: our containerd, never the default /run/containerd
  wait_for "kubelet healthz" 60 curl -sf --max-time 2 http://127.0.0.1:10248/healthz
  [ "$STARTED" = 1 ] || since=0
  wait_for "kubelet: node $NODE_NAME Ready" 120 node_ready_since "$since"
}

start_proxy_dns() {
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1
  wait_for "kube-proxy healthz" 60 curl -sf --max-time 2 http://127.0.0.1:10256/healthz
  kubectl apply -f "$ETC/addons.yaml" >/dev/null
  start coredns "$COREDNS_BIN/coredns" -conf "$ETC/Corefile"
  wait_for "coredns ready" 60 curl -sf --max-time 2 http://127.0.0.1:18181/ready
}

# NetworkPolicies enforced: kube-network-policies on the host, its nftables table
# kube-network-policies in the inet family (bridged pod traffic reaches it through br_netfilter)
start_netpol() {
  [ "$NETPOL" = 1 ] || { log "  skipped (STACKHUB_K8S_NETPOL=0): NetworkPolicies are accepted, not enforced"; return; }
  start kube-network-policies env KUBECONFIG="$ETC/netpol.kubeconfig" "$NETPOL_BIN/kube-network-policies" \
    --hostname-override="$NODE_NAME" --disable-nri --metrics-bind-address=127.0.0.1:10281 --v=1
  wait_for "kube-network-policies metrics" 60 curl -sf --max-time 2 -o /dev/null http://127.0.0.1:10281/metrics
}

dns_works() {
  [ "$(python3 "$AUX/dnsquery.py" "$DNS_SERVICE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN")" = "$API_SERVICE_IP" ]
}

setup_files() { make_pki; write_configs; }

cmd_up() {
  need_root
  mkdir -p "$HOME_DIR" "$RUN_DIR" "$LOG" "$PIDS"
  log "stackhub single-node Kubernetes $K8S_VERSION (state $HOME_DIR, logs $LOG)"
  step "Debian packages" install_packages
  build_all
  step "certificates and configuration" setup_files
  step "host network (bridge $BRIDGE $NODE_IP)" host_setup
  step "containerd (own socket $CTR_SOCK)" start_containerd
  step "etcd" start_etcd
  step "kube-apiserver" start_apiserver
  step "controller-manager and scheduler" start_controllers
  step "kubelet" start_kubelet
  step "kube-proxy and CoreDNS" start_proxy_dns
  step "NetworkPolicies (kube-network-policies)" start_netpol
  step "default ServiceAccount" wait_for "default ServiceAccount" 120 kubectl -n default get serviceaccount default
  step "DNS: kubernetes.default via $DNS_SERVICE_IP" wait_for "coredns: DNS through the kube-dns Service" 60 dns_works
  log "node is up in $((SECONDS - T0)) s. Use it with:"
  log "  eval \"\$($0 env)\"; kubectl get nodes"
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------
# our_shims: pids of containerd shims that belong to the node's containerd (matched by its socket)
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    [[ $(tr '\0' ' ' 2>/dev/null <"$p/cmdline") == *"-address $CTR_SOCK "* ]] && echo "${p#/proc/}"
  done
  return 0
}

# unmount everything mounted under our directories, deepest first
unmount_ours() {
  local -; set +o pipefail   # an empty grep is no failure here
  local m
  awk '{print $2}' /proc/mounts | grep -E "^($HOME_DIR|$RUN_DIR)/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# del_jumps TABLE PARENT CHAIN: delete the rules of PARENT that jump to CHAIN (whatever their matches)
del_jumps() {
  local -; set +o pipefail   # an empty grep is no failure here
  local table=$1 parent=$2 chain=$3 rule
  iptables -t "$table" -S "$parent" 2>/dev/null | grep -E -- "-j $chain( |\$)" | sed 's/^-A /-D /' |
    while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done
}

# drop_chain TABLE CHAIN PARENT...: remove the jumps to CHAIN, then CHAIN itself
drop_chain() {
  local table=$1 chain=$2 parent; shift 2
  iptables -t "$table" -S "$chain" >/dev/null 2>&1 || return 0
  for parent in "$@"; do del_jumps "$table" "$parent" "$chain"; done
  iptables -t "$table" -F "$chain" 2>/dev/null || true
  iptables -t "$table" -X "$chain" 2>/dev/null || true
}

clean_cni_rules() {
  local -; set +o pipefail   # an empty grep is no failure here
  local chain rule net=${POD_CIDR%.*.*}
  # per-pod chains of the bridge plugin's ipMasq carry our network's name in their comment
  for chain in $(iptables -t nat -S 2>/dev/null | grep -F -- "name: \\\"$CNI_NAME\\\"" |
                 awk '$1 == "-A" && $2 != "POSTROUTING" {print $2}' | sort -u); do
    drop_chain nat "$chain" POSTROUTING
  done
  # the firewall plugin's per-pod rules for our addresses, then its shared chains when nobody else
  # (another CNI network on this host) has rules in them
  iptables -S CNI-FORWARD 2>/dev/null | grep -E -- "-[sd] $net\\." | sed 's/^-A /-D /' |
    while read -r rule; do eval "iptables $rule" 2>/dev/null || true; done
  if ! iptables -S CNI-FORWARD 2>/dev/null | grep -v -e '^-N' -e '-j CNI-ADMIN' | grep -q .; then
    drop_chain filter CNI-FORWARD FORWARD
    iptables -S CNI-ADMIN 2>/dev/null | grep -v '^-N' | grep -q . || drop_chain filter CNI-ADMIN FORWARD
  fi
  # the portmap plugin's chains (only made when a pod used a hostPort)
  for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
    if ! iptables -t nat -S "$chain" 2>/dev/null | grep -v -e '^-N' -e 'MARK' -e 'MASQUERADE' | grep -q .; then
      drop_chain nat "$chain" PREROUTING OUTPUT POSTROUTING
    fi
  done
}

remove_cgroups() { # the kubelet's kubepods tree (cgroupfs driver), only empty groups
  local c
  for c in /sys/fs/cgroup/*/kubepods; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

cmd_down() {
  need_root
  log "stopping the stackhub Kubernetes node"
  stop kubelet
  if pid_of containerd >/dev/null && [ -x "$K8S_BIN/stackhub-cri" ]; then
    # stop every pod through the CRI, so that CNI DEL releases addresses, veths and rules
    "$K8S_BIN/stackhub-cri" "$CTR_SOCK" rm-pods | sed 's/^/  /' || log "  (some pods could not be removed cleanly; cleaning up below)"
  fi
  local c i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[$i]}
    [ "$c" = kubelet ] && continue
    stop "$c"
  done
  # kube-proxy's nftables tables, and the node's own (host_setup)
  nft delete table ip stackhub-k8s 2>/dev/null || true
  # (not `kube-proxy --cleanup`: its iptables-mode cleanup leaves an empty `ip6 nat` table behind)
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  nft delete table inet kube-network-policies 2>/dev/null || true
  local pids
  pids=$(our_shims)
  if [ -n "$pids" ]; then
    log "  killing leftover shims of the node's containerd: $pids"
    kill -KILL $pids 2>/dev/null || true
    sleep 1
  fi
  unmount_ours
  clean_cni_rules
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    # veths still attached (a pod that was not removed through the CRI) go with the bridge
    for i in $(ip -o link show master "$BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$i" 2>/dev/null || true; done
    ip link del "$BRIDGE"
    log "  bridge $BRIDGE removed"
  fi
  # host-local's leases: pods start fresh after the next `up`
  rm -rf "$HOME_DIR/cni-ipam"
  remove_cgroups
  if [ -f "$RUN_DIR/nft-tables.saved" ]; then
    local family name
    { nft list tables | grep -vxF -f "$RUN_DIR/nft-tables.saved" || true; } | while read -r _ family name; do
      [[ $(nft list table "$family" "$name") == *"chain "* ]] || { nft delete table "$family" "$name"; log "  removed the empty table $family $name"; }
    done
    rm -f "$RUN_DIR/nft-tables.saved"
  fi
  if [ -f "$RUN_DIR/sysctl.saved" ]; then
    sysctl -q -p "$RUN_DIR/sysctl.saved" >/dev/null 2>&1 || true
    rm -f "$RUN_DIR/sysctl.saved"
  fi
  log "node is down (state, images and volumes kept under $HOME_DIR; PV data under /tmp/hostpath_pv)"
}

# ---------------------------------------------------------------------------------------------
# status, env, load
# ---------------------------------------------------------------------------------------------
cmd_status() {
  local bad=0 c pid health
  for c in "${COMPONENTS[@]}"; do
    [ "$c" = kube-network-policies ] && [ "$NETPOL" != 1 ] && continue
    if pid=$(pid_of "$c"); then
      case $c in
        containerd) ctr --address "$CTR_SOCK" version >/dev/null 2>&1 && health=ok || health=FAIL ;;
        etcd) curl -sf --max-time 2 http://127.0.0.1:2379/health >/dev/null && health=ok || health=FAIL ;;
        kube-apiserver) curl_api /readyz >/dev/null && health=ok || health=FAIL ;;
        kube-controller-manager) curl -skf --max-time 2 https://127.0.0.1:10257/healthz >/dev/null && health=ok || health=FAIL ;;
        kube-scheduler) curl -skf --max-time 2 https://127.0.0.1:10259/healthz >/dev/null && health=ok || health=FAIL ;;
        kubelet) curl -sf --max-time 2 http://127.0.0.1:10248/healthz >/dev/null && health=ok || health=FAIL ;;
        kube-proxy) curl -sf --max-time 2 http://127.0.0.1:10256/healthz >/dev/null && health=ok || health=FAIL ;;
        coredns) curl -sf --max-time 2 http://127.0.0.1:18181/ready >/dev/null && health=ok || health=FAIL ;;
        kube-network-policies) curl -sf --max-time 2 -o /dev/null http://127.0.0.1:10281/metrics && health=ok || health=FAIL ;;
      esac
      local rss
      rss=$(awk '/^VmRSS/ {printf "%d MiB", $2/1024}' "/proc/$pid/status" 2>/dev/null)
      printf '  %-24s %-5s pid %-8s rss %s\n' "$c" "$health" "$pid" "$rss"
    else
      health=DOWN
      printf '  %-24s %s\n' "$c" DOWN
    fi
    [ "$health" = ok ] || bad=1
  done
  if [ $bad = 0 ]; then
    node_ready && echo "  node $NODE_NAME: Ready" || { echo "  node $NODE_NAME: NOT Ready"; bad=1; }
    dns_works && echo "  DNS: kubernetes.default.svc.$CLUSTER_DOMAIN -> $API_SERVICE_IP via $DNS_SERVICE_IP" \
      || { echo "  DNS: FAIL"; bad=1; }
    kubectl get storageclass -o custom-columns='  STORAGECLASS:.metadata.name,PROVISIONER:.provisioner' --no-headers 2>/dev/null | sed 's/^/  storage class: /'
  fi
  return $bad
}

cmd_env() {
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "export PATH=$K8S_BIN:$HELM_BIN:\$PATH"
}

cmd_load() {
  need_root
  [ $# -gt 0 ] || die "usage: $0 load IMAGE..."
  pid_of containerd >/dev/null || die "the node is not up (scripts/k8s-node.sh up)"
  local img id have
  have=$("$K8S_BIN/stackhub-cri" "$CTR_SOCK" images)
  for img in "$@"; do
    local ref=$img
    [[ $ref == */*/* || $ref == *.*/* || $ref == localhost/* ]] || ref=docker.io/$ref
    [[ $ref == docker.io/* && ${ref#docker.io/} != */* ]] && ref=docker.io/library/${ref#docker.io/}
    if ! id=$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null); then
      # not (or no longer) in Docker: what the node already has will do, with a word about it
      local held
      held=$(awk -v r="$ref" '$2 == r {print $1}' <<<"$have")
      [ -n "$held" ] || die "no Docker image $img, and the node has none either"
      log "$img: no such Docker image; the node keeps its copy ($held)"
      continue
    fi
    if grep -qx "$id $ref" <<<"$have"; then
      log "$img: already loaded ($id)"
      continue
    fi
    local t=$SECONDS
    docker save "$img" | ctr --address "$CTR_SOCK" -n k8s.io images import - >/dev/null
    log "$img: loaded in $((SECONDS - t)) s"
  done
}

CMD=${1:-}
case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  load) shift; cmd_load "$@" ;;
  build) need_root; mkdir -p "$HOME_DIR" "$LOG"; build_all ;;
  helm)
    # the chart's offline tests need helm only, not the node: quiet unless it has to build
    if [ ! -x "$HELM_BIN/helm" ]; then
      need_root; mkdir -p "$HOME_DIR" "$LOG" "$BUILD" "$BIN"; go_env; build_helm >&2
    fi
    echo "$HELM_BIN/helm" ;;
  traefik)
    if [ ! -x "$TRAEFIK_BIN/traefik" ]; then
      need_root; mkdir -p "$HOME_DIR" "$LOG" "$BUILD" "$BIN"; go_env; build_traefik >&2
    fi
    echo "$TRAEFIK_BIN/traefik" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
