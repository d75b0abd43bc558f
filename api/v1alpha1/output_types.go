package v1alpha1

// Bounds of the output tail kept in the status.
const (
	// DefaultOutputTailBytes is how many bytes of the end of stdout, and as many of stderr, the
	// status keeps when spec.output.tailBytes is not set.
	DefaultOutputTailBytes int32 = 4096
	// MaxOutputTailBytes is the largest spec.output.tailBytes (a hard cap: two tails of this size
	// keep a FluxJob well below the API server's object size limit).
	MaxOutputTailBytes int32 = 65536
	// MaxOutputMessageLength is the longest status.output.message, in bytes.
	MaxOutputMessageLength = 1024
)

// FluxJobOutputSpec says how much of the job's output the status keeps.
type FluxJobOutputSpec struct {
	// TailBytes is how many bytes of the end of the job's standard output, and as many of its
	// standard error, status.output keeps once the job finished. 0 keeps none (the controller
	// then does not read the job's output at all). Default 4096, at most 65536.
	// +optional
	// +kubebuilder:default=4096
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65536
	TailBytes *int32 `json:"tailBytes,omitempty"`
}

// FluxJobOutput is the end of what the job printed, read from Flux's output eventlog
// (guest.output, what flux job attach shows) when the job finished. Whatever the job prints
// ends up here, secrets included: the FluxJob's readers can read it.
type FluxJobOutput struct {
	// Stdout is the end of the tasks' standard output (every task, in the order Flux recorded
	// it), at most spec.output.tailBytes bytes. Bytes that are not valid UTF-8 are written as
	// \xNN escapes (and count four bytes each); the complete, exact output is what
	// kubectl fluxjob logs prints.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	Stdout string `json:"stdout,omitempty"`
	// Stderr is the end of the tasks' standard error, as Stdout, with the job shell's own
	// messages ("flux-shell[0]: ERROR: ...") where flux job attach prints them.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	Stderr string `json:"stderr,omitempty"`
	// StdoutBytes is how many bytes the tasks wrote to standard output in all (as Flux
	// recorded them); more than the length of stdout means the tail was cut.
	// +optional
	StdoutBytes int64 `json:"stdoutBytes,omitempty"`
	// StderrBytes is the same for standard error (the shell's messages included).
	// +optional
	StderrBytes int64 `json:"stderrBytes,omitempty"`
	// Message says why the tails are incomplete or empty when they are: a stream redirected to a
	// file, or an output eventlog that could not be read in time.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}
