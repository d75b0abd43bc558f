# fluxjob-operator Makefile (kubebuilder style). `make help` lists the targets.
#
# Everything the targets need is built from source through the Go module proxy
# into ./bin (gitignored): controller-gen, and kube-apiserver, etcd and kubectl
# for envtest, the local e2e test and the demo (see hack/envtest.sh).

# Image the docker-build target builds and the kind e2e test loads.
IMG ?= ghcr.io/fluxjob/fluxjob-operator:dev
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 30s
# Flags for `go test` in `make test`.
GO_TEST_FLAGS ?= -race -timeout 45m
# Flags for `go test` in `make bench`.

GO ?= go
# Run recipes in bash with pipefail, as the kubebuilder scaffold does.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

# Where the tools are installed.
LOCALBIN ?= $(CURDIR)/bin
ENVTEST_BIN_DIR ?= $(LOCALBIN)/k8s
# kubelet, kube-controller-manager and kube-scheduler for the real-node e2e
# (hack/node-bins.sh), cached outside the checkout.
NODE_BIN_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fluxjob-operator/k8s-node
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUBECTL ?= $(ENVTEST_BIN_DIR)/kubectl

# The manager's main package and binary.
MAIN_PKG ?= .
MANAGER_BIN ?= $(LOCALBIN)/manager

# Exported to tests, the demo and the e2e scripts.
export KUBEBUILDER_ASSETS := $(ENVTEST_BIN_DIR)
# envtest gives kube-apiserver and etcd 20s to become ready by default; on a
# loaded 2-core machine (parallel test packages each start their own control
# plane) that is not always enough, and a slow start is not a test failure.
export KUBEBUILDER_CONTROLPLANE_START_TIMEOUT ?= 2m
export KUBEBUILDER_CONTROLPLANE_STOP_TIMEOUT ?= 1m
export CONTROLLER_GEN
export KUBECTL
export NODE_BIN_DIR
export MANAGER_BIN
export IMG

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests (config/crd/bases, config/rbac).
	"$(CONTROLLER_GEN)" rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: pod-exec-namespaces
pod-exec-namespaces: ## Set the namespaces of config/components/pod-exec (RoleBindings and --exec-namespaces) from EXEC_NAMESPACES=a,b.
	bash hack/pod-exec-namespaces.sh "$(EXEC_NAMESPACES)"

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods (zz_generated.deepcopy.go).
	"$(CONTROLLER_GEN)" object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt against the code.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet against the code.
	$(GO) vet ./...

.PHONY: fmt-check
fmt-check: ## Fail if a Go file is not gofmt-formatted (changes nothing).
	@unformatted="$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*' -not -path './.git/*'))"; \
	if [[ -n "$$unformatted" ]]; then echo "not gofmt-formatted (run make fmt):"; echo "$$unformatted"; exit 1; fi

.PHONY: test
# The tests check the tree as it is: nothing is regenerated or reformatted
# first, so that TestManifestsUpToDate and TestDeepCopyUpToDate (which
# generate into a temporary directory and compare) and fmt-check fail when a
# generated or unformatted file was committed. The manager binary is built
# first (once main.go exists) so that the local e2e test can start it as a
# process: it finds it through MANAGER_BIN.
#
# test/realflux runs against a real flux-core: the `flux` on PATH, else the
# one hack/flux-core.sh builds from the release tarballs (../shared, or
# FLUX_CORE_TARBALL and FLUX_SECURITY_TARBALL) into a cache outside the
# checkout; its bin directory is put first on PATH for the whole test run
# (one shell, hence the continued lines), and the flux-security it was built
# against is FLUX_SECURITY_PREFIX (unless set already). Under CI=true a flux that is
# neither on PATH nor buildable fails the run.
#
# After the -race run: fluxbridge again without -race (built with the race
# detector, fluxbridge/flux does its socket I/O through the net package
# instead of raw system calls), then the client, job and executor tests over
# the stream transports: an in-memory pipe and relay processes
# (fluxbridge/flux/fluxtest).
test: fmt-check vet controller-gen envtest node-bins $(if $(wildcard main.go),build-manager) ## Run every test in the repo (unit, envtest, local e2e, real-node e2e, real flux-core, fuzz seed corpora, generated-file staleness) with -race.
	@fluxbin="$$(bash hack/flux-core.sh --for-test)"; \
	if [[ -n "$$fluxbin" ]]; then \
		export PATH="$$fluxbin:$$PATH"; echo "make test: flux from $$fluxbin"; \
		: "$${FLUX_SECURITY_PREFIX:=$$(cat "$$fluxbin/../flux-security-prefix")}"; export FLUX_SECURITY_PREFIX; \
		: "$${NODE_FLUX_PREFIX:=$$(cd "$$fluxbin/.." && pwd)}"; export NODE_FLUX_PREFIX; \
	fi; \
	set -x; \
	$(GO) test $(GO_TEST_FLAGS) ./...; \
	$(GO) test -count=1 ./fluxbridge/...; \
	FLUXBRIDGE_TEST_TRANSPORT=pipe $(GO) test -count=1 ./fluxbridge/flux/ ./fluxbridge/job/ ./fluxbridge/; \
	FLUXBRIDGE_TEST_TRANSPORT=process $(GO) test -count=1 ./fluxbridge/flux/ ./fluxbridge/job/ ./fluxbridge/

.PHONY: flux-core
flux-core: ## Build flux-security and flux-core (--with-flux-security) from the release tarballs into the cache; print the prefix.
	@bash hack/flux-core.sh

.PHONY: bench
bench: envtest ## Run every benchmark suite and write docs/benchmarks.md (hack/bench; real-broker rows when flux is on PATH).
	$(GO) run ./hack/bench

.PHONY: fuzz
fuzz: ## Run every Fuzz target in the repo for FUZZTIME each (default 30s).
	FUZZTIME="$(FUZZTIME)" bash hack/fuzz.sh

.PHONY: soak
soak: envtest build ## SIGKILL and restart the manager 100 times while FluxJobs flow (most kills aimed at the submit window), then 20 times inside array submission batches; print kills, in-window kills, duplicates, missing indexes, lost (hack/soak).
	$(GO) run ./hack/soak

.PHONY: test-e2e-kind
test-e2e-kind: ## Run the kind e2e test (needs Docker and kind; skipped with a message where they are missing).
	E2E_KIND=true $(GO) test -v -count=1 -timeout 60m -run 'Kind' ./test/e2e/...

.PHONY: demo
demo: envtest build ## Run the demo: local API server, Flux broker (or the test broker), manager, samples.
	bash hack/demo.sh

##@ Build

.PHONY: build
build: manifests generate fmt vet build-manager ## Regenerate, format, vet and build the manager binary (bin/manager).

.PHONY: build-manager
build-manager: ## Build the manager binary (bin/manager) from the tree as it is.
	$(GO) build -o "$(MANAGER_BIN)" $(MAIN_PKG)

.PHONY: run
run: manifests generate fmt vet ## Run the manager from your host against the cluster in ~/.kube/config.
	$(GO) run $(MAIN_PKG)

.PHONY: docker-build
docker-build: ## Build the manager's container image (IMG). Needs a Docker engine.
	docker build -t "$(IMG)" .

##@ Dependencies

$(LOCALBIN):
	mkdir -p "$(LOCALBIN)"

.PHONY: node-bins
node-bins: ## Build kubelet, kube-controller-manager and kube-scheduler from source into NODE_BIN_DIR (the real-node e2e, hack/node.sh).
	bash hack/node-bins.sh >/dev/null

.PHONY: envtest
envtest: ## Build kube-apiserver, etcd and kubectl from source into bin/k8s (KUBEBUILDER_ASSETS).
	ENVTEST_BIN_DIR="$(ENVTEST_BIN_DIR)" bash hack/envtest.sh >/dev/null

.PHONY: controller-gen
controller-gen: $(LOCALBIN) ## Install controller-gen (CONTROLLER_TOOLS_VERSION) into bin/.
	@if [[ -x "$(CONTROLLER_GEN)" ]] && "$(CONTROLLER_GEN)" --version 2>/dev/null | grep -qx "Version: $(CONTROLLER_TOOLS_VERSION)"; then exit 0; fi; \
	echo "Installing sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION) into $(LOCALBIN)"; \
	GOBIN="$(LOCALBIN)" GOFLAGS=-buildvcs=false $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
