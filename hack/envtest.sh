#!/usr/bin/env bash
# Copyright 2026 The fluxjob-operator Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/envtest.sh builds the control-plane binaries that envtest, the local
# e2e test and the demo run: kube-apiserver and kubectl from Kubernetes
# (module hack/tools/k8s) and etcd (module hack/tools/etcd), from source,
# through the Go module proxy only. No release tarball, setup-envtest or
# dl.k8s.io download is needed, so it works on machines that reach nothing but
# the Go module proxy.
#
# On success it prints one line on stdout: the absolute path of the directory
# that holds the binaries, ready for KUBEBUILDER_ASSETS:
#
#   export KUBEBUILDER_ASSETS="$(hack/envtest.sh)"
#
# It is idempotent: when the binaries are present and the stamp file next to
# them matches the pinned versions (the hash of both tool modules' go.mod and
# go.sum, and the Go version), it does nothing. Progress goes to stderr.
#
# Options:
#   -f, --force   rebuild even when the stamp matches
#   -h, --help    show this help
#
# Environment:
#   ENVTEST_BIN_DIR   where to put the binaries (default: <repo>/bin/k8s)
#   GO                the go command (default: go)

set -euo pipefail

usage() { sed -n '/^# hack\/envtest.sh/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }

force=0
for arg in "$@"; do
	case "$arg" in
	-f | --force) force=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "envtest.sh: unknown argument: $arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/lib/k8s-build.sh
source "$ROOT/hack/lib/k8s-build.sh"
GO="${GO:-go}"
BIN_DIR="${ENVTEST_BIN_DIR:-$ROOT/bin/k8s}"
mkdir -p "$BIN_DIR"
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
K8S_MOD="$ROOT/hack/tools/k8s"
ETCD_MOD="$ROOT/hack/tools/etcd"
STAMP="$BIN_DIR/.envtest-stamp"

log() { echo "envtest.sh: $*" >&2; }

# modversion prints the version that go.mod in $1 requires of module $2.
modversion() {
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod"
}

K8S_VERSION="$(modversion "$K8S_MOD" k8s.io/kubernetes)"
ETCD_VERSION="$(modversion "$ETCD_MOD" go.etcd.io/etcd/server/v3)"
if [[ -z "$K8S_VERSION" || -z "$ETCD_VERSION" ]]; then
	log "cannot read the pinned versions from $K8S_MOD/go.mod and $ETCD_MOD/go.mod"
	exit 1
fi
GO_VERSION="$("$GO" env GOVERSION)"
MOD_HASH="$(cat "$K8S_MOD/go.mod" "$K8S_MOD/go.sum" "$ETCD_MOD/go.mod" "$ETCD_MOD/go.sum" | sha256sum | cut -c1-16)"
WANT_STAMP="kubernetes=$K8S_VERSION etcd=$ETCD_VERSION go=$GO_VERSION mods=$MOD_HASH"

have_all() {
	local b
	for b in kube-apiserver kubectl etcd; do
		[[ -x "$BIN_DIR/$b" ]] || return 1
	done
}

# Serialise concurrent runs (make -j, several terminals) on the same directory.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$BIN_DIR/.envtest-lock"
	flock 9
fi

if [[ $force -eq 0 ]] && have_all && [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
	echo "$BIN_DIR"
	exit 0
fi

log "building kube-apiserver, kubectl $K8S_VERSION and etcd $ETCD_VERSION from source into $BIN_DIR"
log "(first build on a clean machine takes several minutes; later runs reuse the Go build cache)"
rm -f "$STAMP"

tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

k8s_ldflags="$(k8s_ldflags "$K8S_VERSION")"
k8s_build_env

start=$SECONDS
(
	cd "$K8S_MOD"
	"$GO" build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)
log "kube-apiserver and kubectl built in $((SECONDS - start))s"

start=$SECONDS
(
	cd "$ETCD_MOD"
	"$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
)
log "etcd built in $((SECONDS - start))s"

for b in kube-apiserver kubectl etcd; do
	mv -f "$tmp/$b" "$BIN_DIR/$b"
done
echo "$WANT_STAMP" >"$STAMP"
log "done: $("$BIN_DIR/kubectl" version --client 2>/dev/null | head -1); $("$BIN_DIR/etcd" --version 2>/dev/null | head -1)"
echo "$BIN_DIR"
