//go:build race

package flux

// raceEnabled: built with the race detector, which learns that a write to
// a socket happens before the read of those bytes only from the
// syscall package's annotations; raw system calls would hide that order
// and make it report races that are not there, so I/O goes through the
// net package.
const raceEnabled = true
