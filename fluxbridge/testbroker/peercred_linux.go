//go:build linux

package testbroker

import (
	"fmt"
	"net"
	"syscall"
)

// peerUID returns the uid of the process at the other end of nc, from
// SO_PEERCRED, as flux-core's usock server reads it
// (src/common/librouter/usock.c usock_get_cred).
func peerUID(nc *net.UnixConn) (uint32, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("testbroker: peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("testbroker: peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, fmt.Errorf("testbroker: SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}
