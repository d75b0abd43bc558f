// Package testbroker is a test double for a flux-core 0.88 broker: a unix
// socket server that speaks Flux's wire protocol (package wire) and
// simulates the job services a job client uses, so that tests, CI and demos
// can run the production client (fluxbridge/flux, fluxbridge/job,
// fluxbridge.Executor) unmodified where no Flux instance is available.
//
// It is not a Flux replacement. It runs no processes, schedules no real
// resources and stores nothing on disk. What it reproduces, from the byte
// transcripts of a real 0.88.0 broker (../shared/flux-wire) and from
// flux-core's source (paths cited in comments), is what a client can see:
//
//   - the connection: the one accept byte (0, or an errno), SO_PEERCRED
//     credentials (instance owner: rolemask OWNER|LOCAL = 5; a guest:
//     USER|LOCAL = 6), the owner's credential pass-through, responses that
//     echo the request's topic, matchtag, route stack and credentials;
//   - job-ingest.submit with the "none" signing mechanism and the real
//     request checks and error strings;
//   - the job-manager lifecycle with the real event sequence and contexts:
//     submit, validate, depend, priority, alloc, start, finish, release,
//     free, clean, plus exception and urgency; job-manager.raise, kill,
//     urgency, wait and events-journal;
//   - job-info.eventlog-watch (and -cancel) of the main eventlog and of the
//     output eventlog guest.output (RFC 24: header, data, eof, as the job
//     shell writes them; see Outcome.Output), and job-info.lookup;
//   - job-list.list and job-list.list-id, with constraints;
//   - kvs.lookup and kvs.commit for keys clients write (not job data).
//
// # Outcomes
//
// A job's outcome follows from the first task's command, deterministically
// (see Outcome and DefaultOutcome):
//
//	true                      exits 0 (finish status 0)
//	false                     exits 1 (status 256)
//	sleep N                   runs N seconds (times Options.TimeScale; N may
//	                          have an FSD unit s, m, h, d, or be "inf"), exits 0
//	exit N                    exits N (status N<<8)
//	sh -c 'SCRIPT'            SCRIPT is ';'-separated: true, false, sleep N,
//	                          exit N, kill -SIG $$ (evaluated in order)
//	kill-self SIG             a task killed by SIG: the job shell reports
//	                          exit code 128+SIG (status (128+SIG)<<8), as
//	                          flux-core's shell does (src/shell/task.c)
//	kill-shell SIG            the job shell itself killed by SIG: a signalled
//	                          wait status (status = SIG)
//	echo ARGS, printf FMT     write to stdout (printf: \n \t \xHH \NNN escapes,
//	                          %s, %%), exit 0; in sh -c, ">&2" writes to
//	                          stderr and output is timed by the sleeps before
//	echo, hostname, env, ...  the commands in KnownPrograms exit 0
//	anything else             not found: "exec" exception of severity 0,
//	                          "task 0 (host H): start failed: CMD: No such
//	                          file or directory", then finish status 32512,
//	                          as the python-executor transcript shows
//
// attributes.system.exec.test.run_duration (flux-core's test execution
// mode) overrides the command: the job runs that long and exits 0.
// attributes.system.duration > 0 is a time limit: a job still running then
// gets a "timeout" exception and finish status 36608.
//
// Cancelling (job-manager.raise type "cancel") or raising any severity-0
// exception on a running job ends it with finish status 36608 (SIGTERM
// reported as 128+15 by the shell), as the cancel transcript shows;
// job-manager.kill with a terminating signal S ends it with status
// (128+S)<<8. A pending job that gets a fatal exception goes straight to
// clean.
//
// Urgency 0 holds a job: its priority is 0 and it stays in SCHED without
// resources until job-manager.urgency raises it (the urgency-pending
// transcript); urgency 31 expedites it (priority 4294967295). A job waits in
// SCHED while the simulated node (Options.Cores) has too few free cores.
//
// # Knobs
//
// Options sets per-phase delays, the instance owner and guest policy, a
// time scale, and the clock. Server methods inject faults at run time:
// DropConnections, RestartAs (same socket path; a crash or a clean stop on
// the same statedir, or a fresh instance whose job IDs collide with the old
// ones: flux-core's restart semantics, see RestartKind), SetConnectError
// (refuse connections with an errno accept byte), SetSubmitError (reject
// submissions with an errno and message), SetResponseDelay (slow
// responses), SetListLag (job-list lists new jobs late, as flux-core's
// job-list, fed by the job-manager journal, can), PauseScheduling (jobs
// stay pending) and PurgeInactive (flux job purge; Options.Purge purges
// periodically like [job-manager] inactive-age-limit/inactive-num-limit).
// Eventlog, Jobs, Purged and RequestCount let a test look at the jobs and
// at what clients asked, without a client.
package testbroker
