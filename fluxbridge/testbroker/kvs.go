package testbroker

import (
	"encoding/json"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// The KVS here is only what clients write with kvs.commit and read back
// with kvs.lookup: values in the primary namespace, kept across a restart
// on the same statedir and lost with a fresh instance (RestartAs). Job
// data is not in it (job-info serves that). The requests and answers are
// flux-core v0.88.0's (src/common/libkvs/kvs_lookup.c, kvs_commit.c,
// src/modules/kvs/kvs.c); only the instance owner may use the primary
// namespace: kvs.lookup and kvs.commit are open to guests (FLUX_ROLE_USER),
// and the primary namespace's owner check refuses them with EPERM and no
// message (kvs.c getroot, check_user; lookup.c), after the request was
// decoded and the namespace found.

// handleKVSLookup serves kvs.lookup {"key","namespace","flags"} ->
// {"val": treeobj}; a missing key is ENOENT without a message.
func (s *Server) handleKVSLookup(c *conn, req *wire.Message) {
	r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	key, err1 := required(r.str("key"))
	ns, err2 := optional(r.str("namespace"))
	_, err3 := required(r.int("flags"))
	if firstErr(err1, err2, err3) != nil || key == "" {
		s.respondError(c, req, errProto)
		return
	}
	if ns != "" && ns != "primary" {
		s.respondError(c, req, errorf(syscall.ENOTSUP, "namespace %s does not exist", ns))
		return
	}
	if req.Rolemask&roleOwner == 0 {
		s.respondError(c, req, &rpcError{errno: syscall.EPERM})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kvs[normalizeKey(key)]
	if !ok {
		s.respondError(c, req, &rpcError{errno: syscall.ENOENT})
		return
	}
	s.respond(c, req, obj{{"val", json.RawMessage(v)}})
}

// handleKVSCommit serves kvs.commit {"namespace","flags","ops":[{"key",
// "flags","dirent"}]} -> {"rootref","rootseq"}. A dirent that is not a
// JSON object (an unlink is a null dirent) removes the key.
func (s *Server) handleKVSCommit(c *conn, req *wire.Message) {
	var body struct {
		Namespace string `json:"namespace"`
		Flags     *int   `json:"flags"`
		Ops       []struct {
			Key    string          `json:"key"`
			Flags  int             `json:"flags"`
			Dirent json.RawMessage `json:"dirent"`
		} `json:"ops"`
	}
	if req.Flags&wire.FlagPayload == 0 || req.DecodeJSON(&body) != nil || body.Flags == nil || body.Ops == nil {
		s.respondError(c, req, errProto)
		return
	}
	if body.Namespace != "" && body.Namespace != "primary" {
		s.respondError(c, req, errorf(syscall.ENOTSUP, "namespace %s does not exist", body.Namespace))
		return
	}
	if req.Rolemask&roleOwner == 0 {
		// guest_commit_authorize lets a guest commit values; the
		// namespace's owner check then refuses it
		s.respondError(c, req, &rpcError{errno: syscall.EPERM})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kvs == nil {
		s.kvs = make(map[string]kvsValue)
	}
	for _, op := range body.Ops {
		if op.Key == "" {
			s.respondError(c, req, errProto)
			return
		}
		k := normalizeKey(op.Key)
		if len(op.Dirent) == 0 || op.Dirent[0] != '{' {
			delete(s.kvs, k)
			continue
		}
		s.kvs[k] = append(kvsValue(nil), op.Dirent...)
	}
	s.kvsSeq++
	s.respond(c, req, obj{{"rootref", "sha1-0000000000000000000000000000000000000000"}, {"rootseq", s.kvsSeq}})
}

// normalizeKey drops leading, trailing and repeated dots, as the KVS
// normalizes keys (src/common/libkvs/kvs_util.c).
func normalizeKey(k string) string {
	out := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		if k[i] == '.' && (len(out) == 0 || out[len(out)-1] == '.') {
			continue
		}
		out = append(out, k[i])
	}
	for len(out) > 0 && out[len(out)-1] == '.' {
		out = out[:len(out)-1]
	}
	return string(out)
}
