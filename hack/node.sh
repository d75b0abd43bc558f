#!/usr/bin/env bash
# Copyright 2026 The fluxjob-operator Authors.
# SPDX-License-Identifier: Apache-2.0
#
# hack/node.sh runs a real one-node Kubernetes cluster for the node e2e test
# (test/node): etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd, runc and a kubelet, all inside a network namespace it creates,
# so that no traffic leaves it: the node address, the `kubernetes` Service
# address (there is no kube-proxy: in-cluster clients reach the API server on
# that address directly, because it is an address of the namespace) and the
# pods' bridge all live there, and the namespace has no link to anywhere else.
# Every file it writes is under DIR except what the kubelet and containerd
# insist on writing elsewhere (/var/lib/kubelet/{device-plugins,pod-resources},
# /var/log/containers, /run/containerd, /run/netns/cni-*, cgroups), which
# `down` removes.
#
# Usage:
#   hack/node.sh up DIR                start the node; returns once it is Ready
#   hack/node.sh import DIR TARBALL... import image tarballs (docker save or
#                                      OCI layout) into containerd's k8s.io namespace
#   hack/node.sh kubectl DIR ARGS...   run kubectl in the namespace as cluster admin
#   hack/node.sh exec DIR CMD...       run a command in the network namespace
#   hack/node.sh down DIR              stop everything and remove what `up` left
#                                      outside DIR (idempotent)
#
# It must run as root (network namespaces, mounts, cgroups). DIR must be an
# absolute path of an existing, empty directory; keep it short (containerd's
# socket lives there and unix socket paths are limited to 107 bytes).
#
# Environment:
#   KUBEBUILDER_ASSETS  kube-apiserver, etcd, kubectl (default: hack/envtest.sh)
#   NODE_BIN_DIR        kubelet, kube-controller-manager, kube-scheduler
#                       (default: hack/node-bins.sh)
#   CNI_BIN_DIR         the CNI plugins (default: /usr/lib/cni, Debian's
#                       containernetworking-plugins)
#   NODE_UP_TIMEOUT     seconds `up` waits for a Ready node (default: 300)

set -euo pipefail

usage() { sed -n '/^# hack\/node.sh/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }
log() { echo "node.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The network plan, all inside the namespace.
NODE_IP=10.77.0.2
NODE_NET=10.77.0.2/24
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1 # the `kubernetes` Service: first address of SERVICE_CIDR
POD_CIDR=10.244.0.0/24
NODE_NAME=fluxjob-node
API_PORT=443 # the Service's port: no kube-proxy translates it

# cgroup v1 controllers the kubelet needs its cgroupRoot in.
CGROUP_CONTROLLERS=(cpu cpuacct cpuset memory devices freezer blkio pids systemd hugetlb perf_event net_cls net_prio)

[[ $# -ge 1 ]] || {
	usage >&2
	exit 2
}
cmd="$1"
shift
case "$cmd" in
-h | --help)
	usage
	exit 0
	;;
esac
[[ $# -ge 1 ]] || die "$cmd: DIR is missing"
DIR="$1"
shift
[[ "$DIR" == /* ]] || die "DIR must be absolute: $DIR"

# id names what this run owns outside DIR: the network namespace and the
# cgroup root. It is derived from DIR so that `down` finds them again.
ID="fjn-$(printf %s "$DIR" | sha256sum | cut -c1-10)"
NS="$ID"
CGROOT="$ID"
STATE="$DIR/state" # pids and what existed before `up`

in_ns() { nsenter --net="/run/netns/$NS" -- "$@"; }

kubectl_bin() {
	[[ -f "$STATE/assets" ]] || die "no node in $DIR (run up first)"
	echo "$(cat "$STATE/assets")/kubectl"
}

case "$cmd" in
kubectl)
	k="$(kubectl_bin)"
	exec nsenter --net="/run/netns/$NS" -- "$k" --kubeconfig "$DIR/pki/admin.kubeconfig" "$@"
	;;
exec)
	exec nsenter --net="/run/netns/$NS" -- "$@"
	;;
import)
	[[ -S "$DIR/containerd/containerd.sock" ]] || die "containerd is not running in $DIR"
	for tarball in "$@"; do
		# --all-platforms: the tarballs hold one platform; without it ctr
		# checks for the host's platform by name and may refuse.
		ctr --address "$DIR/containerd/containerd.sock" -n k8s.io images import --all-platforms --no-unpack=false "$tarball" >&2 ||
			die "importing $tarball failed"
	done
	exit 0
	;;
up | down) ;;
*)
	usage >&2
	exit 2
	;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, mounts, cgroups)"

# ---------------------------------------------------------------- down
# remove_owned removes path if `up` recorded that it did not exist before.
remove_owned() {
	local p="$1" key="$2"
	if [[ -f "$STATE/absent-$key" ]]; then
		rm -rf "$p"
	fi
}

# kill_all kills every process that runs in the node's network namespace or
# in its cgroups (pods have network namespaces of their own), until none is
# left (bounded).
node_pids() {
	local c
	{
		ip netns pids "$NS" 2>/dev/null || true
		for c in /sys/fs/cgroup/*/"$CGROOT"; do
			if [[ -d "$c" ]]; then
				find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null || true
			fi
		done
		if [[ -f "$STATE/pids" ]]; then
			local p
			while read -r p; do
				[[ -d /proc/$p ]] && echo "$p"
			done <"$STATE/pids"
		fi
		# containerd's shims re-parent to init and run in the namespace of
		# the pod sandbox they serve; they name our containerd's address.
		if [[ -d "$DIR/containerd" ]]; then
			pgrep -f -- "-address $DIR/containerd/containerd.sock" 2>/dev/null || true
		fi
	} | sort -un | grep -v "^$$\$" || true
}

stop_processes() {
	local pids sup i
	# The supervisor first: its trap stops the kubelet and containerd in
	# order (the kubelet stops no pods on exit; everything is killed below).
	if [[ -f "$STATE/supervisor.pid" ]]; then
		sup="$(cat "$STATE/supervisor.pid")"
		if kill -0 "$sup" 2>/dev/null; then
			kill -TERM "$sup" 2>/dev/null || true
			for i in $(seq 1 100); do
				kill -0 "$sup" 2>/dev/null || break
				sleep 0.1
			done
		fi
	fi
	for i in $(seq 1 50); do
		pids="$(node_pids)"
		[[ -z "$pids" ]] && return 0
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.2
	done
	log "processes still running after tear-down: $(node_pids | tr '\n' ' ')"
	return 1
}

do_down() {
	local rc=0 c d m
	stop_processes || rc=1
	# Mounts: every mount the node made is in its own mount namespace,
	# which is gone with its last process. Pod network namespaces are bind
	# mounts in that namespace too; their files in /run/netns remain.
	if [[ -f "$STATE/netns-before" ]]; then
		for m in /run/netns/cni-*; do
			[[ -e "$m" ]] || continue
			if ! grep -qxF "$(basename "$m")" "$STATE/netns-before"; then
				umount "$m" 2>/dev/null || true
				rm -f "$m"
			fi
		done
	fi
	# Host mounts under DIR (none are expected: a fallback).
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	if ip netns list 2>/dev/null | grep -q "^$NS\\b"; then
		ip netns del "$NS" || rc=1
	fi
	if [[ -f "$STATE/absent-netnsmount" ]] && [[ -z "$(ls -A /run/netns 2>/dev/null)" ]]; then
		while grep -q ' /run/netns ' /proc/self/mountinfo; do
			umount /run/netns || break
		done
	fi
	if [[ -f "$STATE/absent-netnsdir" ]]; then rmdir /run/netns 2>/dev/null || true; fi
	# cgroups in every hierarchy (runc also makes them in the cgroup2
	# one, "unified", next to the v1 controllers), deepest first (a cgroup
	# directory is removed with rmdir).
	for d in /sys/fs/cgroup/*/"$CGROOT"; do
		[[ -d "$d" ]] || continue
		find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		[[ -d "$d" ]] && {
			log "cannot remove cgroup $d"
			rc=1
		}
	done
	# What the kubelet and containerd write outside their configured roots.
	remove_owned /var/lib/kubelet kubelet
	remove_owned /var/log/containers logcontainers
	remove_owned /var/log/pods logpods
	remove_owned /run/containerd runcontainerd
	remove_owned /var/lib/cni varlibcni
	remove_owned /etc/cni etccni
	# Files under DIR may be owned by the pods' uid or be read-only; the
	# caller removes DIR itself.
	return $rc
}

if [[ "$cmd" == down ]]; then
	[[ -d "$DIR" ]] || exit 0
	do_down
	exit $?
fi

# ---------------------------------------------------------------- up
[[ -d "$DIR" ]] || die "DIR does not exist: $DIR"
[[ -z "$(ls -A "$DIR")" ]] || die "DIR is not empty: $DIR"
for tool in containerd containerd-shim-runc-v2 runc ctr openssl nsenter unshare ip; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (apt-get install containerd runc containernetworking-plugins iproute2 openssl util-linux)"
done
CNI_BIN_DIR="${CNI_BIN_DIR:-/usr/lib/cni}"
for p in bridge host-local loopback; do
	[[ -x "$CNI_BIN_DIR/$p" ]] || die "CNI plugin $p is not in $CNI_BIN_DIR (apt-get install containernetworking-plugins)"
done
ASSETS="${KUBEBUILDER_ASSETS:-}"
[[ -n "$ASSETS" && -x "$ASSETS/kube-apiserver" ]] || ASSETS="$("$ROOT/hack/envtest.sh")"
NODE_BINS="${NODE_BIN_DIR:-}"
[[ -n "$NODE_BINS" && -x "$NODE_BINS/kubelet" ]] || NODE_BINS="$("$ROOT/hack/node-bins.sh")"
for b in "$ASSETS/kube-apiserver" "$ASSETS/etcd" "$ASSETS/kubectl" "$NODE_BINS/kubelet" "$NODE_BINS/kube-controller-manager" "$NODE_BINS/kube-scheduler"; do
	[[ -x "$b" ]] || die "missing $b"
done
if ip netns list 2>/dev/null | grep -q "^$NS\\b"; then
	die "network namespace $NS exists already (run down $DIR)"
fi

mkdir -p "$STATE" "$DIR/logs" "$DIR/pki"
echo "$ASSETS" >"$STATE/assets"
echo "$NS" >"$STATE/netns"
# What exists before: down removes only what up created.
for pair in /var/lib/kubelet:kubelet /var/log/containers:logcontainers /var/log/pods:logpods \
	/run/containerd:runcontainerd /var/lib/cni:varlibcni /etc/cni:etccni; do
	[[ -e "${pair%%:*}" ]] || touch "$STATE/absent-${pair##*:}"
done
ls /run/netns 2>/dev/null >"$STATE/netns-before" || true
# `ip netns add` makes /run/netns a mount point (a bind mount of itself) the
# first time; down undoes that when up did it.
[[ -d /run/netns ]] || touch "$STATE/absent-netnsdir"
grep -q ' /run/netns ' /proc/self/mountinfo || touch "$STATE/absent-netnsmount"

trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "up failed; tearing down (logs in $DIR/logs)"; do_down || true; fi' EXIT

start=$SECONDS

# ---- network namespace: the node's interface is one end of a veth pair
# whose other end is in the namespace too (the dummy driver is not always
# there), a bridge for pods, and no route anywhere else: the default route
# leads into the pair, whose far end forwards nothing.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add node0 type veth peer name node0-end
ip -n "$NS" addr add "$NODE_NET" dev node0
ip -n "$NS" addr add "$SERVICE_IP/32" dev node0
ip -n "$NS" link set node0-end up
ip -n "$NS" link set node0 up
ip -n "$NS" route add default dev node0

# ---- cgroups: the kubelet's cgroupRoot, in every v1 hierarchy
for c in "${CGROUP_CONTROLLERS[@]}"; do
	[[ -d "/sys/fs/cgroup/$c" ]] || continue
	mkdir -p "/sys/fs/cgroup/$c/$CGROOT"
done
if [[ -d /sys/fs/cgroup/cpuset/$CGROOT ]]; then
	cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$CGROOT/cpuset.cpus"
	cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$CGROOT/cpuset.mems"
fi

# ---- PKI
pki="$DIR/pki"
(
	cd "$pki"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=fluxjob-node-ca" 2>/dev/null
	sign() { # name subject [san]
		local ext
		ext="$(mktemp "$pki/ext.XXXXXX")"
		{
			echo "basicConstraints=CA:FALSE"
			echo "keyUsage=digitalSignature,keyEncipherment"
			if [[ -n "${3:-}" ]]; then
				echo "extendedKeyUsage=serverAuth,clientAuth"
				echo "subjectAltName=$3"
			else
				echo "extendedKeyUsage=clientAuth"
			fi
		} >"$ext"
		openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$ext" 2>/dev/null
		rm -f "$1.csr" "$ext"
	}
	sign apiserver "/CN=kube-apiserver" "IP:$SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	# One cluster-admin client certificate for kubectl, the controller
	# manager, the scheduler and the kubelet, and the API server's client
	# certificate for the kubelet: this cluster lives for one test.
	sign admin "/O=system:masters/CN=fluxjob-node-admin"
	sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	cat >admin.kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: node
  context: {cluster: node, user: admin}
current-context: node
EOF
)

# ---- containerd: everything under DIR but /run/containerd (its shims'
# sockets), which it hard-codes.
mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/cni/cache" "$DIR/kubelet" "$DIR/pod-logs"
cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "fluxjob.local/pause:e2e"
  # Without CAP_SYS_RESOURCE every sandbox fails with "can't get final
  # child's PID from pipe: EOF" otherwise.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$DIR/cni/net.d"
EOF
# Pods get an address on a bridge inside the node's namespace; the node's
# addresses (the API server's, the Service's) are local there, so pods reach
# the API server without kube-proxy, and the kubelet reaches the pods.
cat >"$DIR/cni/net.d/10-fluxjob.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "fluxjob-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
# The pods' resolv.conf: no name server (nothing outside may be asked).
echo "search cluster.local" >"$DIR/resolv.conf"

cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: AlwaysAllow
# cgroup v1 (this machine kind): kubelet 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROOT
failSwapOn: false
resolvConf: $DIR/resolv.conf
podLogsDir: $DIR/pod-logs
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
serializeImagePulls: false
maxPods: 30
EOF

# The kubelet shares the admin certificate, as kube-controller-manager and
# kube-scheduler do (one cluster-admin identity on a test node).
cp "$pki/admin.kubeconfig" "$DIR/kubelet/kubeconfig"

# ---- the supervisor: runs inside the network namespace and a mount
# namespace of its own (slave: the host's mounts are seen, the node's mounts
# stay in it and vanish with it), starts every daemon, and on SIGTERM stops
# them in reverse order.
cat >"$DIR/supervisor.sh" <<'EOF'
#!/usr/bin/env bash
set -uo pipefail
DIR="$1"
pids=()
start() { # name cmd...
	local name="$1"
	shift
	"$@" >"$DIR/logs/$name.log" 2>&1 &
	pids+=($!)
	echo $! >>"$DIR/state/pids"
	echo $! >"$DIR/state/$name.pid"
}
stop() {
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill -TERM "${pids[$i]}" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "${pids[$i]}" 2>/dev/null
	done
	exit 0
}
trap stop TERM INT
# No name server for anything of the node: this mount namespace is the
# node's own, and the host's resolv.conf names servers outside.
mount --bind "$DIR/resolv.conf" /etc/resolv.conf
source "$DIR/state/commands"
wait
EOF

cat >"$STATE/commands" <<EOF
start etcd "$ASSETS/etcd" --data-dir "$DIR/etcd" --listen-client-urls http://127.0.0.1:2379 \
	--advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
	--initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
	--name default --log-level warn
start kube-apiserver "$ASSETS/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
	--bind-address 0.0.0.0 --secure-port $API_PORT --advertise-address $NODE_IP \
	--service-cluster-ip-range $SERVICE_CIDR \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" \
	--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
	--service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
	--service-account-signing-key-file "$pki/sa.key" \
	--authorization-mode Node,RBAC --allow-privileged=false --kubelet-preferred-address-types InternalIP
# kube-controller-manager and kube-scheduler exit when the API server is
# not serving yet (they read its authentication ConfigMap at start).
until "$ASSETS/kubectl" --kubeconfig "$pki/admin.kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; do sleep 0.5; done
start kube-controller-manager "$NODE_BINS/kube-controller-manager" --kubeconfig "$pki/admin.kubeconfig" \
	--authentication-kubeconfig "$pki/admin.kubeconfig" --authorization-kubeconfig "$pki/admin.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
	--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
	--service-cluster-ip-range $SERVICE_CIDR --use-service-account-credentials=false
start kube-scheduler "$NODE_BINS/kube-scheduler" --kubeconfig "$pki/admin.kubeconfig" \
	--authentication-kubeconfig "$pki/admin.kubeconfig" --authorization-kubeconfig "$pki/admin.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false
start containerd containerd --config "$DIR/containerd/config.toml"
for _ in \$(seq 1 300); do [[ -S "$DIR/containerd/containerd.sock" ]] && break; sleep 0.1; done
start kubelet "$NODE_BINS/kubelet" --config "$DIR/kubelet/config.yaml" --kubeconfig "$DIR/kubelet/kubeconfig" \
	--root-dir "$DIR/kubelet/root" --cert-dir "$DIR/kubelet/pki" --node-ip $NODE_IP \
	--hostname-override $NODE_NAME --v 1
EOF

# PATH for containerd: its runc shim and runc from Debian's packages.
nsenter --net="/run/netns/$NS" -- unshare --mount --propagation slave -- \
	setsid bash "$DIR/supervisor.sh" "$DIR" </dev/null >"$DIR/logs/supervisor.log" 2>&1 &
echo $! >"$STATE/supervisor.pid"

# ---- wait for a Ready node
timeout="${NODE_UP_TIMEOUT:-300}"
k=(nsenter --net="/run/netns/$NS" -- "$ASSETS/kubectl" --kubeconfig "$pki/admin.kubeconfig" --request-timeout=5s)
deadline=$((SECONDS + timeout))
until "${k[@]}" get --raw /readyz >/dev/null 2>&1; do
	kill -0 "$(cat "$STATE/supervisor.pid")" 2>/dev/null || die "the supervisor exited (logs in $DIR/logs)"
	((SECONDS < deadline)) || die "kube-apiserver not ready after ${timeout}s: $(tail -5 "$DIR/logs/kube-apiserver.log")"
	sleep 0.5
done
log "kube-apiserver ready after $((SECONDS - start))s"
until "${k[@]}" get node "$NODE_NAME" >/dev/null 2>&1; do
	((SECONDS < deadline)) || die "the node did not register after ${timeout}s: $(tail -5 "$DIR/logs/kubelet.log")"
	sleep 0.5
done
left=$((deadline - SECONDS))
((left > 0)) || left=1
"${k[@]}" wait node "$NODE_NAME" --for=condition=Ready --timeout="${left}s" >&2 ||
	die "the node is not Ready: $(tail -5 "$DIR/logs/kubelet.log")"
# kube-root-ca.crt (which the manager's projected token volume needs) and
# the default ServiceAccount come from kube-controller-manager.
until "${k[@]}" get -n default serviceaccount default >/dev/null 2>&1 && "${k[@]}" get -n default configmap kube-root-ca.crt >/dev/null 2>&1; do
	((SECONDS < deadline)) || die "kube-controller-manager did not create the default ServiceAccount: $(tail -5 "$DIR/logs/kube-controller-manager.log")"
	sleep 0.5
done
log "node $NODE_NAME Ready after $((SECONDS - start))s (network namespace $NS)"
trap - EXIT
