package flux

import (
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

// newRawReader returns a reader for nc's socket, or nc itself if it has
// none.
func newRawReader(nc net.Conn) io.Reader {
	rc := rawConn(nc)
	if rc == nil {
		return nc
	}
	return &rawReader{rc: rc}
}

func (r *rawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			r1, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				return false // wait for the poller
			}
			n, errno = int(r1), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "unix", Err: errno}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// maxIovecs is the most buffers one writev takes (Linux UIO_MAXIOV).
const maxIovecs = 1024

// rawWritev writes bufs to rc's socket with raw writev(2) calls, waiting
// on the poller while the socket is full, until all is written or an error
// occurs; it returns the bytes written. iov is scratch space, returned for
// reuse.
func rawWritev(rc syscall.RawConn, bufs [][]byte, iov []syscall.Iovec) (int, []syscall.Iovec, error) {
	total := 0
	for len(bufs) > 0 {
		iov = iov[:0]
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
		if len(iov) == 0 {
			break
		}
		var (
			n     int
			errno syscall.Errno
		)
		err := rc.Write(func(fd uintptr) bool {
			for {
				r1, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
				if e == syscall.EINTR {
					continue
				}
				if e == syscall.EAGAIN {
					return false // wait for the poller
				}
				n, errno = int(r1), e
				return true
			}
		})
		if err != nil {
			return total, iov, err
		}
		if errno != 0 {
			return total, iov, &net.OpError{Op: "writev", Net: "unix", Err: errno}
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
	return total, iov, nil
}

// tryWritev makes one non-blocking writev(2) of bufs (at most maxIovecs of
// them) and returns the bytes written, 0 if the socket is full.
func tryWritev(rc syscall.RawConn, bufs [][]byte) (int, error) {
	var iov [16]syscall.Iovec
	vecs := iov[:0]
	for _, b := range bufs {
		if len(vecs) == maxIovecs {
			break
		}
		if len(b) == 0 {
			continue
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		vecs = append(vecs, v)
	}
	if len(vecs) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := rc.Write(func(fd uintptr) bool {
		for {
			r1, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vecs[0])), uintptr(len(vecs)))
			if e == syscall.EINTR {
				continue
			}
			n, errno = int(r1), e
			return true // never wait for the poller
		}
	})
	if err != nil {
		return 0, err
	}
	if errno == syscall.EAGAIN {
		return 0, nil
	}
	if errno != 0 {
		return 0, &net.OpError{Op: "writev", Net: "unix", Err: errno}
	}
	return n, nil
}
