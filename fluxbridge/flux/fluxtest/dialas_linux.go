//go:build linux

package fluxtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
)

// DialUnixAs connects to the unix socket path as uid and gid: the
// connection's peer credentials (SO_PEERCRED), which a Flux broker's
// connector-local and munged read to tell who the client is, are uid's
// and gid's, as if a process of that user had connected, as sshd's
// session process for the user does. It needs root (CAP_SETUID and
// CAP_SETGID): only the calling thread's effective ids change, on a
// locked OS thread, for the connect system call alone, and the thread
// goes back to the runtime only once they are restored (else it ends
// with its goroutine). The socket and the directories above it must let
// uid in, as for any process of that user.
func DialUnixAs(ctx context.Context, path string, uid, gid uint32) (net.Conn, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("fluxtest: connecting to %s as uid %d needs root", path, uid)
	}
	type result struct {
		nc  net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := connectAs(path, uid, gid)
		if err == errNotRestored {
			ch <- result{err: err} // the thread stays locked: it ends with this goroutine
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			ch <- result{err: fmt.Errorf("fluxtest: connecting to %s as uid %d: %w", path, uid, err)}
			return
		}
		f := os.NewFile(uintptr(fd), path)
		nc, err := net.FileConn(f)
		_ = f.Close()
		ch <- result{nc, err}
	}()
	select {
	case r := <-ch:
		return r.nc, r.err
	case <-ctx.Done():
		go func() { // the connect finishes (a unix connect does not wait long): close what it made
			if r := <-ch; r.nc != nil {
				_ = r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

var errNotRestored = fmt.Errorf("fluxtest: could not restore the thread's credentials")

// connectAs runs on a locked thread: it sets the thread's effective gid
// and uid (setresgid/setresuid on this thread only, keeping the real and
// saved ids so that root comes back), connects, and restores them.
func connectAs(path string, uid, gid uint32) (int, error) {
	const keep = ^uintptr(0) // -1: leave that id as it is
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, keep, uintptr(gid), keep); e != 0 {
		return -1, e
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, keep, 0, keep); e != 0 {
			return -1, errNotRestored
		}
		return -1, e
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		if err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
			_ = syscall.Close(fd)
			fd = -1
		}
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, 0, keep); e != 0 {
		return -1, errNotRestored
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, keep, 0, keep); e != 0 {
		return -1, errNotRestored
	}
	return fd, err
}
