package flux

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"
)

// The Conn's reader and writer goroutines read and write the socket with
// raw non-blocking system calls driven by the runtime's network poller
// (syscall.RawConn). A read or write through the net package enters the
// scheduler's syscall state, which wakes the runtime's sysmon thread
// whenever the process was idle: for a client woken by one small message
// at a time (a job event) that wake-up cost more than the read itself
// (measured against a real broker: about half the client's CPU time, see
// docs/benchmarks.md). A non-blocking call cannot block, so making it raw
// is safe.

// rawConn returns nc's syscall.RawConn, or nil if it has none or the
// race detector is on (see raceEnabled).
func rawConn(nc net.Conn) syscall.RawConn {
	if raceEnabled {
		return nil
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawReader is an io.Reader of a socket, reading with raw read(2).
type rawReader struct {
	rc syscall.RawConn
}

func (r *rawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := rawCall(r.rc.Read, syscall.SYS_READ, unsafe.Pointer(&p[0]), len(p), true)
	if err != nil {
		return 0, opError("read", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// rawCall makes the raw system call trap(fd, p, n) on a socket through op
// (a syscall.RawConn's Read or Write, which supplies fd), retrying on
// EINTR. On EAGAIN it waits on the poller and tries again when wait is
// set, and returns 0 otherwise. A failed call returns its errno.
func rawCall(op func(func(fd uintptr) bool) error, trap uintptr, p unsafe.Pointer, n int, wait bool) (int, error) {
	var (
		r     int
		errno syscall.Errno
	)
	err := op(func(fd uintptr) bool {
		for {
			r1, _, e := syscall.RawSyscall(trap, fd, uintptr(p), uintptr(n))
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN && wait:
				return false // wait for the poller
			}
			r, errno = int(r1), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno == syscall.EAGAIN:
		return 0, nil // not waiting
	case errno != 0:
		return 0, errno
	}
	return r, nil
}

// opError wraps an errno from rawCall as the net package would.
func opError(op string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return &net.OpError{Op: op, Net: "unix", Err: errno}
	}
	return err
}

// maxIovecs is the most buffers one writev takes (Linux UIO_MAXIOV).
const maxIovecs = 1024

// iovecs appends to iov the non-empty buffers of bufs, at most maxIovecs.
func iovecs(iov []syscall.Iovec, bufs [][]byte) []syscall.Iovec {
	for _, b := range bufs {
		if len(iov) == maxIovecs {
			break
		}
		if len(b) == 0 {
			continue
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	return iov
}

// rawWritev writes bufs to rc's socket with raw writev(2) calls, waiting
// on the poller while the socket is full, until all is written or an error
// occurs; it returns the bytes written. iov is scratch space, returned for
// reuse.
func rawWritev(rc syscall.RawConn, bufs [][]byte, iov []syscall.Iovec) (int, []syscall.Iovec, error) {
	total := 0
	for {
		iov = iovecs(iov[:0], bufs)
		if len(iov) == 0 {
			return total, iov, nil
		}
		n, err := rawCall(rc.Write, syscall.SYS_WRITEV, unsafe.Pointer(&iov[0]), len(iov), true)
		if err != nil {
			return total, iov, opError("writev", err)
		}
		total += n
		// drop what was written
		for n > 0 && len(bufs) > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
}

// tryWritev makes one non-blocking writev(2) of bufs (at most maxIovecs of
// them) and returns the bytes written, 0 if the socket is full.
func tryWritev(rc syscall.RawConn, bufs [][]byte) (int, error) {
	var scratch [16]syscall.Iovec
	iov := iovecs(scratch[:0], bufs)
	if len(iov) == 0 {
		return 0, nil
	}
	n, err := rawCall(rc.Write, syscall.SYS_WRITEV, unsafe.Pointer(&iov[0]), len(iov), false)
	if err != nil {
		return 0, opError("writev", err)
	}
	return n, nil
}
