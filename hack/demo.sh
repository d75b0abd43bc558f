#!/usr/bin/env bash
# The demo behind `make demo`: a local kube-apiserver and etcd, a Flux broker
# (flux-core when installed, else the test broker), the manager, the samples.
# Arguments go to hack/demo (see `go run ./hack/demo -h`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$(hack/envtest.sh)}"
exec go run ./hack/demo "$@"
