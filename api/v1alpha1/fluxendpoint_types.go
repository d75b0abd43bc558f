package v1alpha1

import (
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Names and values of the FluxEndpoint API.
const (
	// DefaultInstanceAnnotation marks the FluxEndpoint that FluxJobs without spec.instance run on,
	// the way ingressclass.kubernetes.io/is-default-class marks the default IngressClass. Only the
	// value "true" counts. With no FluxEndpoint marked, the manager's implicit instance (its
	// --flux-uri, named by --default-instance) is the default; with more than one marked, FluxJobs
	// without spec.instance wait with reason AmbiguousDefaultInstance.
	DefaultInstanceAnnotation = "fluxendpoint.fluxjob.io/is-default-class"

	// SSHPrivateKeyKey is the key of the private key in the Secret of an ssh:// FluxEndpoint (the
	// key of a Secret of type kubernetes.io/ssh-auth).
	SSHPrivateKeyKey = "ssh-privatekey"
	// SSHKnownHostsKey is the key of the known_hosts lines (OpenSSH format) the remote host key is
	// checked against, in the Secret of an ssh:// FluxEndpoint.
	SSHKnownHostsKey = "known_hosts"

	// DefaultMiniClusterSocket is the lead broker's local:// socket in a flux-operator MiniCluster
	// (flux-operator api/v1alpha2: the flux view is mounted at spec.flux.mountPath, default
	// /mnt/flux, and the broker's rundir is config/run/flux under it).
	DefaultMiniClusterSocket = "/mnt/flux/config/run/flux/local"
	// DefaultInstanceWorkers is the number of executor workers (broker connections) of an instance
	// when spec.executor.workers is omitted.
	DefaultInstanceWorkers int32 = 2
)

// Condition types set on FluxEndpoints (kstatus: Ready; plus Connected).
const (
	// InstanceConditionConnected is True while the manager holds a connection to the instance's
	// broker; False with the last error otherwise.
	InstanceConditionConnected = "Connected"
	// InstanceConditionReady is the kstatus Ready condition: True when the instance is connected
	// and its connection settings were accepted.
	InstanceConditionReady = "Ready"
)

// Condition reasons on FluxEndpoints.
const (
	// ReasonConnected: the manager is connected to the broker.
	ReasonConnected = "Connected"
	// ReasonConnecting: the first connection attempt has not finished.
	ReasonConnecting = "Connecting"
	// ReasonConnectFailed: connecting failed or the connection was lost; the message has the error.
	ReasonConnectFailed = "ConnectFailed"
	// ReasonBrokerUnresponsive: the broker stopped answering (the keepalive's round trip or the
	// status read timed out); the connection is closed and dialled again.
	ReasonBrokerUnresponsive = "BrokerUnresponsive"
	// ReasonMessageTooLarge: the broker sent a message over spec.executor.maxMessageBytes; the
	// connection was closed before the message was read.
	ReasonMessageTooLarge = "MessageTooLarge"
	// ReasonMalformedMessage: the broker sent bytes that are not Flux messages; the connection
	// was closed.
	ReasonMalformedMessage = "MalformedMessage"
	// ReasonInvalidConnection: spec.connection cannot be used (the message says why: a Secret
	// missing, no pod matching, a transport this manager was built without...). The manager
	// retries when the spec or what it refers to changes.
	ReasonInvalidConnection = "InvalidConnection"
	// ReasonExecNamespaceNotAllowed: a miniCluster or pod connection names a namespace that is
	// not one of the manager's exec namespaces (--exec-namespaces, set by the
	// config/components/pod-exec install; empty by default, so no pod connection is used).
	// Nothing is exec'd and no pod is read.
	ReasonExecNamespaceNotAllowed = "ExecNamespaceNotAllowed"
	// ReasonExecCommandNotAllowed: a miniCluster or pod connection sets command, which this
	// manager does not run (only the default relay command, unless the manager was started
	// with --allow-exec-command).
	ReasonExecCommandNotAllowed = "ExecCommandNotAllowed"
)

// Condition type and reasons set on FluxJobs by instance routing.
const (
	// ConditionInstanceAdmitted is True when the FluxJob's Flux instance exists and admits the
	// FluxJob's namespace; False (with one of the reasons below) while it does not: nothing is
	// submitted then, and the FluxJob proceeds as soon as the instance appears or admits it.
	ConditionInstanceAdmitted = "InstanceAdmitted"
	// ReasonAdmitted: the instance exists and admits the namespace.
	ReasonAdmitted = "Admitted"
	// ReasonInstanceNotFound: no FluxEndpoint of that name (spec.instance, status.instance).
	ReasonInstanceNotFound = "InstanceNotFound"
	// ReasonNamespaceNotAdmitted: the instance's spec.namespaceSelector does not select the
	// FluxJob's namespace.
	ReasonNamespaceNotAdmitted = "NamespaceNotAdmitted"
	// ReasonNoDefaultInstance: spec.instance is empty and there is no default instance.
	ReasonNoDefaultInstance = "NoDefaultInstance"
	// ReasonAmbiguousDefaultInstance: spec.instance is empty and more than one FluxEndpoint is
	// marked default.
	ReasonAmbiguousDefaultInstance = "AmbiguousDefaultInstance"
)

// SecretReference names a Secret in the manager's own namespace. The manager may read Secrets
// only there (its RBAC is a Role in that namespace), so a FluxEndpoint cannot make it read a
// Secret anywhere else.
type SecretReference struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// MiniClusterConnection reaches the lead broker of a flux-operator MiniCluster through the
// Kubernetes pods/exec subresource, running `flux relay SOCKET` in its flux container. The lead
// broker pod is the Running pod with the labels flux-operator's indexed Job sets
// (job-name=<name>, job-index=0) that is also owned, by ownerReference UIDs, by the MiniCluster's
// Job, itself controlled by the MiniCluster of that name (a pod with the labels and no such
// owner is never used; more than one such pod is refused as ambiguous). flux-operator's Go
// module is not needed.
type MiniClusterConnection struct {
	// Namespace of the MiniCluster.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
	// Name of the MiniCluster.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Container to exec in. Default: the MiniCluster's name (flux-operator names the flux
	// container after the MiniCluster).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Container string `json:"container,omitempty"`
	// SocketPath is the broker's local:// socket in that container. Default
	// /mnt/flux/config/run/flux/local.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="socketPath must be an absolute path"
	SocketPath string `json:"socketPath,omitempty"`
	// Command replaces the relay command run in the container; the socket path is appended as
	// its last argument. Default: a shell that sources /mnt/flux/flux-view.sh (flux is not on
	// PATH in a bare exec) and runs `flux relay`. The manager refuses a FluxEndpoint that sets it
	// (reason ExecCommandNotAllowed) unless started with --allow-exec-command.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	Command []string `json:"command,omitempty"`
}

// PodOwner names the controller a broker pod must belong to: the pod's controller
// ownerReference must name this object and carry its current UID.
type PodOwner struct {
	// Kind of the controller: StatefulSet, ReplicaSet, DaemonSet (apps/v1) or Job (batch/v1).
	// +required
	// +kubebuilder:validation:Enum=StatefulSet;ReplicaSet;DaemonSet;Job
	Kind string `json:"kind"`
	// Name of the controller, in the pod's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// PodConnection reaches a broker in any pod through the pods/exec subresource, running `flux
// relay SOCKET` in one of its containers. Give exactly one of name and selector; a selector
// needs owner, and the first Running pod (by name) that matches it and is controlled by that
// owner is used: labels alone are not trusted, since whoever may create a pod in the namespace
// can copy them.
// +kubebuilder:validation:XValidation:rule="!has(self.selector) || has(self.owner)",message="connection.pod.selector needs connection.pod.owner (the controller the broker pod must belong to)"
type PodConnection struct {
	// Namespace of the pod.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
	// Name of the pod.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`
	// Selector picks the pod by labels, among the pods controlled by owner.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	// Owner is the controller the pod must belong to (its controller ownerReference, UID
	// included). Required with selector; with name, checked when given.
	// +optional
	Owner *PodOwner `json:"owner,omitempty"`
	// Container to exec in. Default: the pod's first container.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Container string `json:"container,omitempty"`
	// SocketPath is the broker's local:// socket in that container.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="socketPath must be an absolute path"
	SocketPath string `json:"socketPath"`
	// Command replaces the relay command (default ["flux", "relay"]); the socket path is appended
	// as its last argument. The manager refuses a FluxEndpoint that sets it (reason
	// ExecCommandNotAllowed) unless started with --allow-exec-command.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	Command []string `json:"command,omitempty"`
}

// FluxEndpointConnection says how the manager reaches the broker. Give exactly one of uri,
// miniCluster and pod.
//
// +kubebuilder:validation:XValidation:rule="(has(self.uri) ? 1 : 0) + (has(self.miniCluster) ? 1 : 0) + (has(self.pod) ? 1 : 0) == 1",message="give exactly one of connection.uri, connection.miniCluster and connection.pod"
// +kubebuilder:validation:XValidation:rule="!has(self.uri) || !self.uri.startsWith('ssh://') || has(self.secretRef)",message="an ssh:// connection.uri needs connection.secretRef (the Secret with ssh-privatekey and known_hosts)"
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || (has(self.uri) && self.uri.startsWith('ssh://'))",message="connection.secretRef goes with an ssh:// connection.uri only"
type FluxEndpointConnection struct {
	// URI of the broker: local:///path/to/socket (a socket the manager's pod can reach), or
	// ssh://[user@]host[:port]/path/to/socket, which runs `flux relay /path/to/socket` on the host
	// through SSH, as flux-core's ssh connector does. There is no TCP connector in flux-core, on
	// purpose: a socket exposed over TCP gives every client the owner's rights.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.matches('^local:///[^?#]*$') || self.matches('^ssh://([^@/?#]+@)?[^@/?#:]+(:[0-9]{1,5})?/[^?#]*$')",message="connection.uri must be local:///PATH or ssh://[USER@]HOST[:PORT]/PATH"
	URI string `json:"uri,omitempty"`
	// SecretRef names a Secret in the manager's namespace holding the SSH private key
	// (ssh-privatekey) and the known_hosts lines (known_hosts) the host key is checked against.
	// Required with ssh://; there is no trust on first use.
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`
	// MiniCluster is a flux-operator MiniCluster, reached through pods/exec.
	// +optional
	MiniCluster *MiniClusterConnection `json:"miniCluster,omitempty"`
	// Pod is a pod running a Flux broker, reached through pods/exec.
	// +optional
	// +kubebuilder:validation:XValidation:rule="has(self.name) != has(self.selector)",message="give exactly one of connection.pod.name and connection.pod.selector"
	Pod *PodConnection `json:"pod,omitempty"`
}

// EventSourceName selects how an instance's executor follows jobs.
// +kubebuilder:validation:Enum=Eventlog;Journal
type EventSourceName string

const (
	// EventSourceEventlog: one job-info.eventlog-watch per job (the default, open to guests).
	EventSourceEventlog EventSourceName = "Eventlog"
	// EventSourceJournal: one job-manager.events-journal stream per executor (instance owner only).
	EventSourceJournal EventSourceName = "Journal"
)

// FluxEndpointExecutor tunes the instance's executor.
// +kubebuilder:validation:XValidation:rule="!has(self.keepalive) || duration(self.keepalive) >= duration('1s')",message="keepalive must be at least 1s"
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTimeout) || duration(self.keepaliveTimeout) >= duration('1s')",message="keepaliveTimeout must be at least 1s"
type FluxEndpointExecutor struct {
	// Workers is the number of executor workers, each with its own broker connection. Default 2.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Workers *int32 `json:"workers,omitempty"`
	// EventSource is how jobs are followed: Eventlog (default) or Journal (owner only).
	// +optional
	EventSource EventSourceName `json:"eventSource,omitempty"`
	// MaxMessageBytes is the largest message accepted from the broker (default 4 MiB). A broker
	// is untrusted input: a larger message ends the connection with reason MessageTooLarge
	// instead of costing the manager its memory. Lower it for instances you trust less.
	// +optional
	// +kubebuilder:validation:Minimum=65536
	// +kubebuilder:validation:Maximum=67108864
	MaxMessageBytes *int32 `json:"maxMessageBytes,omitempty"`
	// Keepalive is how often each connection to the broker is checked with a round trip
	// (broker.ping, allowed to guests too); a broker that does not answer within
	// KeepaliveTimeout is disconnected (reason BrokerUnresponsive) and dialled again.
	// Default 15s.
	// +optional
	Keepalive *metav1.Duration `json:"keepalive,omitempty"`
	// KeepaliveTimeout bounds the keepalive's round trip. Default 10s.
	// +optional
	KeepaliveTimeout *metav1.Duration `json:"keepaliveTimeout,omitempty"`
}

// FluxEndpointSpec is a Flux instance the manager submits FluxJobs to.
// +kubebuilder:validation:XValidation:rule="!has(self.accounts) || (has(self.connection.uri) && self.connection.uri.startsWith('ssh://'))",message="spec.accounts needs an ssh:// connection.uri (each account logs in to its host)"
type FluxEndpointSpec struct {
	// Connection says how to reach the instance's broker.
	// +required
	Connection FluxEndpointConnection `json:"connection"`
	// NamespaceSelector selects the namespaces whose FluxJobs may run on this instance, as a
	// Kueue ClusterQueue's does: omitted selects no namespace, {} selects every namespace.
	// Whoever can create a FluxJob in a selected namespace runs commands as the user the
	// namespace's account logs in as (spec.accounts), else as the user spec.connection logs in as.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Executor tunes the instance's executor.
	// +optional
	Executor FluxEndpointExecutor `json:"executor,omitempty"`
	// Accounts map admitted namespaces to the accounts their FluxJobs
	// are submitted as (accounts_types.go). Omitted: every admitted
	// namespace submits through spec.connection.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Accounts []FluxEndpointAccount `json:"accounts,omitempty"`
	// UnmappedNamespaces says what becomes of FluxJobs of an admitted
	// namespace that no account selects: Refuse (the default: they wait,
	// reason NoAccount) or EndpointConnection (submitted through
	// spec.connection). Only meaningful with spec.accounts.
	// +optional
	UnmappedNamespaces UnmappedNamespacePolicy `json:"unmappedNamespaces,omitempty"`
}

// FluxEndpointJobCounts are the instance's job counts (job-list.job-stats).
type FluxEndpointJobCounts struct {
	// Pending jobs: states depend, priority and sched.
	Pending int64 `json:"pending"`
	// Running jobs: states run and cleanup.
	Running int64 `json:"running"`
	// Inactive jobs (finished and still listed).
	Inactive int64 `json:"inactive"`
	// Successful inactive jobs.
	Successful int64 `json:"successful"`
	// Failed inactive jobs (including cancelled and timed out).
	Failed int64 `json:"failed"`
	// Total of the states.
	Total int64 `json:"total"`
}

// FluxEndpointStatus is what the manager knows of the instance.
type FluxEndpointStatus struct {
	// Conditions: Connected and Ready, with the last error in their message.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the metadata.generation this status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Version is the broker's flux-core version (broker attribute "version").
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Version string `json:"version,omitempty"`
	// Size is the number of brokers of the instance (broker attribute "size").
	// +optional
	Size int32 `json:"size,omitempty"`
	// Jobs are the instance's job counts (all users' jobs, as job-list reports them).
	// +optional
	Jobs *FluxEndpointJobCounts `json:"jobs,omitempty"`
	// Queues are the instance's named queues, if it has any.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=128
	Queues []string `json:"queues,omitempty"`
	// LastContactTime is when the manager last had an answer from the broker.
	// +optional
	LastContactTime *metav1.Time `json:"lastContactTime,omitempty"`
	// Endpoint is where the manager connects, as it resolved spec.connection (the URI, or
	// pod/namespace/container for an exec connection).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Endpoint string `json:"endpoint,omitempty"`
	// Accounts are the connections of spec.accounts.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Accounts []FluxEndpointAccountStatus `json:"accounts,omitempty"`
}

// FluxEndpoint is a Flux instance (flux-core broker) that FluxJobs run on: the manager keeps one
// executor and control connection per FluxEndpoint.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=fep,categories=flux
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.status.size`
// +kubebuilder:printcolumn:name="Running",type=integer,JSONPath=`.status.jobs.running`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.jobs.pending`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type FluxEndpoint struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is how to reach the instance and who may use it.
	// +required
	Spec FluxEndpointSpec `json:"spec"`
	// Status is what the manager observed.
	// +optional
	Status FluxEndpointStatus `json:"status,omitempty"`
}

// IsDefault reports whether the FluxEndpoint carries DefaultInstanceAnnotation "true".
func (fi *FluxEndpoint) IsDefault() bool {
	return fi.Annotations[DefaultInstanceAnnotation] == "true"
}

// ChooseDefaultInstance picks the instance FluxJobs without spec.instance run on, from the names
// of the FluxEndpoints marked default (DefaultInstanceAnnotation) and the manager's implicit
// instance ("" if none): the one marked, else the implicit one. With none, reason is
// ReasonNoDefaultInstance; with more than one marked, ReasonAmbiguousDefaultInstance and
// candidates lists them, sorted. The manager's routing and the kubectl plugin both choose with it.
func ChooseDefaultInstance(marked []string, implicit string) (name, reason string, candidates []string) {
	switch {
	case len(marked) == 1:
		return marked[0], "", nil
	case len(marked) > 1:
		candidates = append([]string(nil), marked...)
		sort.Strings(candidates)
		return "", ReasonAmbiguousDefaultInstance, candidates
	case implicit != "":
		return implicit, "", nil
	}
	return "", ReasonNoDefaultInstance, nil
}

// FluxEndpointList is a list of FluxEndpoints.
//
// +kubebuilder:object:root=true
type FluxEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the FluxEndpoints.
	Items []FluxEndpoint `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FluxEndpoint{}, &FluxEndpointList{})
}
