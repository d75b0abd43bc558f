#!/usr/bin/env bash
# Sets the namespaces of config/components/pod-exec from one list: writes
# rolebindings.yaml (one RoleBinding of ClusterRole fluxjob-pod-exec to the
# manager's ServiceAccount per namespace) and exec_namespaces_patch.yaml
# (--exec-namespaces with the same list).
#
#   hack/pod-exec-namespaces.sh flux-operator,hpc-team   (or: make pod-exec-namespaces EXEC_NAMESPACES=...)
#
# OUT (default config/components/pod-exec) is where the two files go.
set -euo pipefail
list="${1:?usage: $0 NAMESPACE[,NAMESPACE...]}"
out="${OUT:-$(dirname "$0")/../config/components/pod-exec}"
IFS=, read -r -a nss <<<"$list"
clean=()
for ns in "${nss[@]}"; do
	ns="${ns// /}"
	[[ -z "$ns" ]] && continue
	if ! [[ "$ns" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || ((${#ns} > 63)); then
		echo "pod-exec-namespaces: $ns is not a namespace name" >&2
		exit 2
	fi
	clean+=("$ns")
done
((${#clean[@]} > 0)) || { echo "pod-exec-namespaces: no namespace given" >&2; exit 2; }
joined="$(IFS=,; echo "${clean[*]}")"
{
	echo "# One RoleBinding per exec namespace, written by hack/pod-exec-namespaces.sh"
	echo "# from the list $joined (which also sets --exec-namespaces in"
	echo "# exec_namespaces_patch.yaml): run it again to change the list."
	first=1
	for ns in "${clean[@]}"; do
		((first)) || echo "---"
		first=0
		cat <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: fluxjob-pod-exec
  namespace: $ns
  labels:
    app.kubernetes.io/name: fluxjob-operator
    app.kubernetes.io/managed-by: kustomize
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: fluxjob-pod-exec
subjects:
- kind: ServiceAccount
  name: fluxjob-controller-manager
  namespace: fluxjob-system
YAML
	done
} >"$out/rolebindings.yaml"
cat >"$out/exec_namespaces_patch.yaml" <<YAML
# The namespaces FluxEndpoint miniCluster and pod connections may name:
# exactly those of rolebindings.yaml. Written by hack/pod-exec-namespaces.sh.
- op: add
  path: /spec/template/spec/containers/0/args/-
  value: --exec-namespaces=$joined
YAML
