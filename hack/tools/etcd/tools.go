//go:build tools

// Package etcdtools records the etcd command hack/envtest.sh builds, so that
// go.mod and go.sum hold everything it needs.
package etcdtools

import (
	_ "go.etcd.io/etcd/server/v3"
)
