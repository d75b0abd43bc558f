package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Accounts: who a FluxJob's Flux job runs as.
//
// A FluxEndpoint without spec.accounts submits every admitted namespace's
// FluxJobs through its own connection, as the user that connection logs
// in as (the instance owner, in a deployment the manager runs the
// instance for). With spec.accounts, each admitted namespace is mapped
// to one account: an SSH identity, kept in a Secret of the manager's
// namespace, that logs in to the endpoint's host as a user of the HPC
// centre; the manager opens one connection per account and signs each
// jobspec with a MUNGE credential the host's munged issues to that user
// over the same SSH connection. The account is chosen from the FluxJob's
// namespace and the FluxEndpoint only: no field of a FluxJob names it.

// Names and values of the accounts API.
const (
	// DefaultMungeSocket is munged's default socket on the endpoint's
	// host (munge 0.5: /run/munge/munge.socket.2).
	DefaultMungeSocket = "/run/munge/munge.socket.2"

	// ReasonNoAccount: the FluxEndpoint has spec.accounts, none of them
	// selects the FluxJob's namespace, and spec.unmappedNamespaces is
	// Refuse (a FluxJob condition reason, InstanceAdmitted=False; the
	// FluxJob waits until a mapping selects its namespace).
	ReasonNoAccount = "NoAccount"
	// ReasonOwnerOnly: the FluxJob asks for what the Flux instance grants
	// its owner only (spec.urgency above 16, spec.waitable), and its
	// namespace submits as an account of the FluxEndpoint, which is a
	// guest of the instance. It fails before submission with the message
	// flux-core's job-ingest would answer.
	ReasonOwnerOnly = "OwnerOnly"
)

// AccountSigning is how an account's jobspecs are signed.
// +kubebuilder:validation:Enum=Munge;Curve
type AccountSigning string

const (
	// SigningMunge: a MUNGE credential from the endpoint host's munged,
	// through the account's SSH connection (the default).
	SigningMunge AccountSigning = "Munge"
	// SigningCurve: flux-security's curve mechanism, with the account's
	// certificate from its Secret (CurveCertKey, CurveKeyKey), issued by a
	// CA the instance trusts ([sign.curve] require-ca) for the account's
	// uid (its metadata "userid", which the envelope claims).
	SigningCurve AccountSigning = "Curve"

	// CurveCertKey is the key of a curve account's certificate (the
	// public file flux-security keeps as ~/.flux/curve/sig.pub) in its
	// Secret.
	CurveCertKey = "curve-cert"
	// CurveKeyKey is the key of its secret file (~/.flux/curve/sig).
	CurveKeyKey = "curve-key"
)

// UnmappedNamespacePolicy says what becomes of FluxJobs of an admitted
// namespace that no account of the FluxEndpoint selects.
// +kubebuilder:validation:Enum=Refuse;EndpointConnection
type UnmappedNamespacePolicy string

const (
	// UnmappedRefuse: such FluxJobs wait (InstanceAdmitted=False, reason
	// NoAccount) and nothing is submitted. The default.
	UnmappedRefuse UnmappedNamespacePolicy = "Refuse"
	// UnmappedEndpointConnection: such FluxJobs are submitted through the
	// endpoint's own connection, as the user it logs in as.
	UnmappedEndpointConnection UnmappedNamespacePolicy = "EndpointConnection"
)

// FluxEndpointAccount maps a set of namespaces to the account their
// FluxJobs are submitted as.
type FluxEndpointAccount struct {
	// Name identifies the account in the FluxEndpoint's status, logs and
	// metrics.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// NamespaceSelector selects the namespaces (among those the
	// FluxEndpoint's spec.namespaceSelector admits) whose FluxJobs
	// submit as this account. The first account in the list whose
	// selector selects a namespace is that namespace's account; {}
	// selects every namespace.
	// +required
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
	// User is the login name on the endpoint's host. Default: the user
	// of spec.connection.uri.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.][-A-Za-z0-9_.]*$`
	User string `json:"user,omitempty"`
	// SecretRef names a Secret in the manager's namespace holding this
	// account's SSH private key (ssh-privatekey) and the known_hosts lines
	// the host key is checked against (known_hosts), as
	// spec.connection.secretRef does.
	// +required
	SecretRef SecretReference `json:"secretRef"`
	// Signing is how this account's jobspecs are signed: Munge (default)
	// or Curve (the Secret then also holds curve-cert and curve-key).
	// +optional
	Signing AccountSigning `json:"signing,omitempty"`
	// MungeSocket is munged's socket on the endpoint's host, reached
	// through the account's SSH connection (a forwarded unix socket, so
	// munged vouches for the SSH user). Default
	// /run/munge/munge.socket.2.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="mungeSocket must be an absolute path"
	MungeSocket string `json:"mungeSocket,omitempty"`
}

// FluxEndpointAccountStatus is what the manager knows of one account's
// connection.
type FluxEndpointAccountStatus struct {
	// Name is the account's name (spec.accounts[].name).
	Name string `json:"name"`
	// Connected is true while the manager holds the account's connection.
	Connected bool `json:"connected"`
	// UserID is the uid munged vouches for on the endpoint's host, or the
	// uid a curve account's certificate was issued for: the Flux userid of
	// this account's jobs.
	// +optional
	UserID *int64 `json:"userID,omitempty"`
	// Message is the last connection or signing error.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}
