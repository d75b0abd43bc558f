// Package kvs reads and writes small values in a Flux instance's key-value
// store (the primary namespace), with the requests flux-core v0.88.0's
// libkvs sends: kvs.lookup {"key","namespace","flags"} -> {"val": treeobj}
// (src/common/libkvs/kvs_lookup.c) and kvs.commit {"namespace","flags",
// "ops"} -> {"rootref","rootseq"} (src/common/libkvs/kvs_commit.c). A
// value travels as an RFC 11 "val" tree object, {"data": base64, "type":
// "val", "ver": 1}. Only the instance owner may use the primary namespace.
package kvs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// namespace is the KVS namespace every value here lives in.
const namespace = "primary"

// treeobj is an RFC 11 tree object; only "val" objects are used here.
type treeobj struct {
	Data string `json:"data"`
	Type string `json:"type"`
	Ver  int    `json:"ver"`
}

// Get returns the value of key. A key that is not there is an error
// matching syscall.ENOENT; a key that holds a directory or a reference to
// large content (not a "val") is an error matching syscall.EPROTO.
func Get(ctx context.Context, c *flux.Conn, key string) ([]byte, error) {
	req := struct {
		Key       string `json:"key"`
		Namespace string `json:"namespace"`
		Flags     int    `json:"flags"`
	}{key, namespace, 0}
	var resp struct {
		Val *treeobj `json:"val"`
	}
	if err := c.RPC(ctx, "kvs.lookup", req, &resp); err != nil {
		return nil, fmt.Errorf("kvs: lookup %s: %w", key, err)
	}
	if resp.Val == nil || resp.Val.Type != "val" {
		return nil, fmt.Errorf("kvs: lookup %s: not a value: %w", key, syscall.EPROTO)
	}
	b, err := base64.StdEncoding.DecodeString(resp.Val.Data)
	if err != nil {
		return nil, fmt.Errorf("kvs: lookup %s: %w: %w", key, syscall.EPROTO, err)
	}
	return b, nil
}

// Put sets key to value in one commit.
func Put(ctx context.Context, c *flux.Conn, key string, value []byte) error {
	type op struct {
		Key    string  `json:"key"`
		Flags  int     `json:"flags"`
		Dirent treeobj `json:"dirent"`
	}
	req := struct {
		Namespace string `json:"namespace"`
		Flags     int    `json:"flags"`
		Ops       []op   `json:"ops"`
	}{namespace, 0, []op{{Key: key, Dirent: treeobj{Data: base64.StdEncoding.EncodeToString(value), Type: "val", Ver: 1}}}}
	var resp json.RawMessage
	if err := c.RPC(ctx, "kvs.commit", req, &resp); err != nil {
		return fmt.Errorf("kvs: commit %s: %w", key, err)
	}
	return nil
}
