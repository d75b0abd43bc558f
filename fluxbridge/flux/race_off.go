//go:build !race

package flux

// raceEnabled is false: built without the race detector, the Conn reads
// and writes with raw system calls (see rawConn).
const raceEnabled = false
