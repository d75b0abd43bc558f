# Sourced by hack/envtest.sh and hack/node-bins.sh: what both need to build
# Kubernetes binaries from the module proxy as Kubernetes' own build does.

# k8s_ldflags prints the linker flags that stamp version $1 (vMAJOR.MINOR.PATCH)
# into a Kubernetes binary, as hack/lib/version.sh does in Kubernetes: the
# binaries report it (`kubectl version`, the API server's /version, the
# kubelet in its Node's status) and the version skew checks read it.
k8s_ldflags() {
	local version="$1" minor major pkg flags="-s -w"
	minor="${version#v*.}"
	minor="${minor%%.*}"
	major="${version#v}"
	major="${major%%.*}"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	printf '%s\n' "$flags"
}

# k8s_build_env sets the environment the builds run in: static binaries;
# the tool modules' go.sum files are committed, so no build may rewrite them;
# another go.work (a developer's) must not pull the tool modules into it.
k8s_build_env() {
	export CGO_ENABLED=0
	export GOFLAGS="-mod=readonly -buildvcs=false"
	export GOWORK=off
}
