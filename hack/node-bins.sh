#!/usr/bin/env bash
# Copyright 2026 The fluxjob-operator Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/node-bins.sh builds the node binaries the real-node e2e
# (hack/node-e2e.sh) runs besides hack/envtest.sh's kube-apiserver, kubectl
# and etcd: kubelet, kube-controller-manager and kube-scheduler from
# Kubernetes (module hack/tools/node), from source, through the Go module
# proxy only. A cold build takes about 9 minutes and 2.7 GB of memory on two
# cores; the result is cached outside the checkout and reused.
#
# On success it prints one line on stdout: the absolute path of the directory
# that holds the binaries.
#
# It is idempotent: when the binaries are present and the stamp file next to
# them matches the pinned version (the hash of the tool module's go.mod and
# go.sum, and the Go version), it does nothing. Progress goes to stderr.
#
# Options:
#   -f, --force   rebuild even when the stamp matches
#   -h, --help    show this help
#
# Environment:
#   NODE_BIN_DIR  where to put the binaries
#                 (default: ${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator/k8s-node)
#   GO            the go command (default: go)

set -euo pipefail

usage() { sed -n '/^# hack\/node-bins.sh/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }

force=0
for arg in "$@"; do
	case "$arg" in
	-f | --force) force=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "node-bins.sh: unknown argument: $arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/lib/k8s-build.sh
source "$ROOT/hack/lib/k8s-build.sh"
GO="${GO:-go}"
BIN_DIR="${NODE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxjob-operator/k8s-node}"
mkdir -p "$BIN_DIR"
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
MOD="$ROOT/hack/tools/node"
STAMP="$BIN_DIR/.node-bins-stamp"
BINS=(kubelet kube-controller-manager kube-scheduler)

log() { echo "node-bins.sh: $*" >&2; }

K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit } $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$MOD/go.mod")"
if [[ -z "$K8S_VERSION" ]]; then
	log "cannot read the pinned Kubernetes version from $MOD/go.mod"
	exit 1
fi
GO_VERSION="$("$GO" env GOVERSION)"
MOD_HASH="$(cat "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-16)"
WANT_STAMP="kubernetes=$K8S_VERSION go=$GO_VERSION mods=$MOD_HASH"

have_all() {
	local b
	for b in "${BINS[@]}"; do
		[[ -x "$BIN_DIR/$b" ]] || return 1
	done
}

# Serialise concurrent runs on the same directory.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$BIN_DIR/.node-bins-lock"
	flock 9
fi

if [[ $force -eq 0 ]] && have_all && [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
	echo "$BIN_DIR"
	exit 0
fi

log "building ${BINS[*]} $K8S_VERSION from source into $BIN_DIR"
log "(a cold build takes about 9 minutes on two cores; later runs reuse the Go build cache)"
rm -f "$STAMP"

tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

k8s_ldflags="$(k8s_ldflags "$K8S_VERSION")"
k8s_build_env

start=$SECONDS
(
	cd "$MOD"
	"$GO" build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/" \
		k8s.io/kubernetes/cmd/kubelet \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler
)
log "${BINS[*]} built in $((SECONDS - start))s"

for b in "${BINS[@]}"; do
	mv -f "$tmp/$b" "$BIN_DIR/$b"
done
echo "$WANT_STAMP" >"$STAMP"
log "done: $("$BIN_DIR/kubelet" --version 2>/dev/null | head -1)"
echo "$BIN_DIR"
