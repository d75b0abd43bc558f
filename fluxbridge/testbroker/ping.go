package testbroker

import (
	"encoding/json"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

func init() {
	handlers["broker.ping"] = handler{fn: (*Server).handlePing}
}

// handlePing serves broker.ping as flux-core's broker does for every role
// (src/broker/ping.c): the request's JSON object (EPROTO without one)
// with "route", "userid" and "rolemask" added. It is what a client's
// keepalive (flux.WithKeepalive) sends.
func (s *Server) handlePing(c *conn, req *wire.Message) {
	var o map[string]json.RawMessage
	p := req.Payload
	if n := len(p); n > 0 && p[n-1] == 0 {
		p = p[:n-1]
	}
	if req.Flags&wire.FlagPayload == 0 || json.Unmarshal(p, &o) != nil || o == nil {
		s.respondError(c, req, &rpcError{errno: syscall.EPROTO})
		return
	}
	o["route"], _ = json.Marshal("testbroker!0")
	o["userid"], _ = json.Marshal(req.UserID)
	o["rolemask"], _ = json.Marshal(req.Rolemask)
	s.respond(c, req, o)
}
