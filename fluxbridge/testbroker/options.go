package testbroker

import (
	"os"
	"time"

	"github.com/go-logr/logr"
)

// SocketName is the name of the socket file the server creates in
// Options.Dir. A local:// URI names the socket itself (flux-core
// src/common/libflux/connector_local.c uses the path as given), so URI
// returns local://<Dir>/local, like a system instance's
// local:///run/flux/local.
const SocketName = "local"

// Delays are the simulated durations of the job lifecycle's phases. Each is
// the time between the previous event and the named one. Zero values mean
// "as fast as possible" (events are still posted in order). A real 0.88
// broker takes about 10ms for each of Validate and Depend, and a few ms for
// the others (see the eventlog-watch transcript).
type Delays struct {
	// Ingest delays the submit response (jobspec validation in job-ingest).
	Ingest time.Duration
	// Validate is submit -> validate.
	Validate time.Duration
	// Depend is validate -> depend (priority follows at once).
	Depend time.Duration
	// Sched is priority -> alloc (once the job is not held and cores are free).
	Sched time.Duration
	// Start is alloc -> start.
	Start time.Duration
	// Run is the minimum time between start and finish for a command that
	// exits at once (true, false, exit N); sleep N adds to nothing, it
	// replaces it.
	Run time.Duration
	// Kill is the time a running job takes to die after a fatal exception
	// or a kill (exception/kill -> finish).
	Kill time.Duration
	// Cleanup is finish (or a pending job's fatal exception) -> release,
	// free and clean.
	Cleanup time.Duration
}

// RealisticDelays returns delays close to what the captured 0.88 broker
// showed (eventlog-watch transcript): about 10ms per early phase.
func RealisticDelays() Delays {
	return Delays{
		Ingest:   2 * time.Millisecond,
		Validate: 10 * time.Millisecond,
		Depend:   10 * time.Millisecond,
		Sched:    3 * time.Millisecond,
		Start:    2 * time.Millisecond,
		Run:      20 * time.Millisecond,
		Kill:     10 * time.Millisecond,
		Cleanup:  1 * time.Millisecond,
	}
}

// Outcome is what a job's command does once started, as decided by
// Options.Outcome (DefaultOutcome when nil).
type Outcome struct {
	// Run is how long the command runs before it exits (before TimeScale).
	Run time.Duration
	// Status is the finish event's wait status (POSIX encoding).
	Status int
	// NotFound makes the start fail like an unknown program: an "exec"
	// exception of severity 0 whose note names the program, then finish
	// status 32512 (exit code 127).
	NotFound bool
	// Output is what the tasks write, by time (see OutputChunk): the
	// job's guest.output eventlog. A killed job writes only what was due.
	Output []OutputChunk
}

// Options configure a Server. The zero value works: a socket in a new
// temporary directory, no delays, the current user as instance owner.
type Options struct {
	// Dir is the directory for the socket (SocketName inside it). Empty
	// means a new temporary directory, removed by Close.
	Dir string
	// Delays are the lifecycle's per-phase delays.
	Delays Delays
	// TimeScale multiplies every command run time (sleep N, run_duration)
	// and time limit (attributes.system.duration): 0.001 turns "sleep 5"
	// into 5ms. Zero means 1. Phase delays are not scaled.
	TimeScale float64
	// OwnerUID is the instance owner's uid. Nil means the uid of this
	// process. Connections from the owner get rolemask OWNER|LOCAL (5).
	OwnerUID *uint32
	// AllowGuests accepts connections from other users with rolemask
	// USER|LOCAL (6), like [access] allow-guest-user = true. Without it such
	// a connection gets the accept byte EPERM, as connector-local does.
	AllowGuests bool
	// PrivateMode is [access] private-mode = true: a guest sees only its
	// own jobs in job-list (list skips others' jobs; list-id of one is
	// ENOENT) and job-manager.getinfo refuses it (EPERM). Without it a
	// guest lists every user's jobs and may ask getinfo, as in flux-core
	// 0.88's default (src/modules/job-list/auth.c,
	// src/modules/job-manager/job-manager.c).
	PrivateMode bool
	// GuestSigning accepts mechanism "none" from guests. A real
	// multi-user instance requires a flux-security signature from guests
	// ("only instance owner can use sign-type=none", EPERM); this knob
	// stands in for one so guest jobs can be tested.
	GuestSigning bool
	// FluxSecurity makes job-ingest behave as in a flux-core built with
	// flux-security: J is decoded as flux_sign_unwrap_anymech does without
	// verifying the signature (sign.Parse), so any mechanism flux-security
	// knows is accepted (munge from guests, none from the owner), and a
	// J it cannot decode is refused with flux-security's message. Without
	// it only "none" envelopes decode, as flux-core without flux-security.
	FluxSecurity bool
	// Cores is the number of cores of the simulated node; a job waits in
	// SCHED until its cores are free. Zero means 8.
	Cores int
	// Hostname is the simulated node's name (nodelist, exec exception
	// notes). Empty means "testbroker".
	Hostname string
	// Outcome decides what a job's command does. Nil means DefaultOutcome.
	Outcome func(command []string) Outcome
	// Now is the clock for event timestamps and job IDs (FLUIDs). Nil
	// means time.Now. Delays and run times always use real timers.
	Now func() time.Time
	// ClockOffset is added to every time the broker's clock (Now) gives:
	// event timestamps, t_submit, t_inactive, job-list's "since", job IDs.
	// A broker whose clock runs ahead of the manager's (positive) or
	// behind it (negative), as a remote instance's may.
	ClockOffset time.Duration
	// ListLag is how long job-list takes to list a job after job-ingest
	// answered its submit request. flux-core's job-list is a separate
	// module that learns of jobs from the job-manager's journal
	// (src/modules/job-list/job_state.c), so a job can be missing from
	// job-list.list for a moment after its ID reached the client; a
	// job-list.list-id for it waits until it is listed (idsync.c), as it
	// does here. Zero: listed at once. SetListLag changes it for later
	// submissions.
	ListLag time.Duration
	// Purge, if not nil, removes old inactive jobs periodically as
	// flux-core's job-manager does with [job-manager] inactive-age-limit
	// and inactive-num-limit (see Purge).
	Purge *Purge
	// MaxMessageSize bounds a request's encoded size. Zero means
	// wire.DefaultMaxSize.
	MaxMessageSize int
	// Logger receives the server's log lines. The zero Logger discards them.
	Logger logr.Logger
	// Queues are the instance's named queues ([queues] in a flux-core
	// config), all started. Empty: the single anonymous queue, and a job
	// naming any queue is refused (see checkQueue).
	Queues []string
	// DefaultQueue is the queue of a job that names none
	// (policy.jobspec.defaults.system.queue); it must be one of Queues.
	DefaultQueue string
}

func (o *Options) ownerUID() uint32 {
	if o.OwnerUID != nil {
		return *o.OwnerUID
	}
	return uint32(os.Getuid())
}

func (o *Options) cores() int {
	if o.Cores <= 0 {
		return 8
	}
	return o.Cores
}

func (o *Options) hostname() string {
	if o.Hostname == "" {
		return "testbroker"
	}
	return o.Hostname
}

func (o *Options) scale(d time.Duration) time.Duration {
	if o.TimeScale <= 0 {
		return d
	}
	return time.Duration(float64(d) * o.TimeScale)
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now().Add(o.ClockOffset)
	}
	return time.Now().Add(o.ClockOffset)
}
