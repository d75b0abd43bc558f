package testbroker

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// handler serves one request topic. It runs on the connection's reader
// goroutine and must not block; it responds through s.respond* (now or
// later).
type handler struct {
	fn func(s *Server, c *conn, req *wire.Message)
	// ownerOnly handlers refuse guests with EPERM (a flux_msg_handler_spec
	// rolemask of 0, e.g. job-manager.events-journal).
	ownerOnly bool
}

// services are the registered service names; a request to one of these with
// an unknown method gets "Unknown service method", any other topic "No
// service matching ... is registered".
var services = []string{"job-ingest", "job-manager", "job-info", "job-list", "kvs"}

var handlers = map[string]handler{
	"job-ingest.submit":                     {fn: (*Server).handleSubmit},
	"job-manager.raise":                     {fn: (*Server).handleRaise},
	"job-manager.kill":                      {fn: (*Server).handleKill},
	"job-manager.urgency":                   {fn: (*Server).handleUrgency},
	"job-manager.getinfo":                   {fn: (*Server).handleGetinfo},
	"job-manager.queue-list":                {fn: (*Server).handleQueueList},
	"job-manager.queue-status":              {fn: (*Server).handleQueueStatus},
	"job-manager.queue-start":               {fn: (*Server).handleQueueStart, ownerOnly: true},
	"job-manager.queue-enable":              {fn: (*Server).handleQueueEnable, ownerOnly: true},
	"job-manager.wait":                      {fn: (*Server).handleWait},
	"job-manager.events-journal":            {fn: (*Server).handleJournal, ownerOnly: true},
	"job-manager.events-journal-cancel":     {fn: (*Server).handleJournalCancel, ownerOnly: true},
	"job-info.eventlog-watch":               {fn: (*Server).handleEventlogWatch},
	"job-info.eventlog-watch-cancel":        {fn: (*Server).handleEventlogWatchCancel},
	"job-info.lookup":                       {fn: (*Server).handleLookup},
	"job-list.list":                         {fn: (*Server).handleList},
	"job-list.list-id":                      {fn: (*Server).handleListID},
	"kvs.lookup":                            {fn: (*Server).handleKVSLookup},
	"kvs.commit":                            {fn: (*Server).handleKVSCommit},
	"job-manager.disconnect":                {fn: func(*Server, *conn, *wire.Message) {}},
	"job-info.disconnect":                   {fn: func(*Server, *conn, *wire.Message) {}},
	"job-manager.events-journal-disconnect": {fn: func(*Server, *conn, *wire.Message) {}},
}

// handle dispatches one message from c.
func (s *Server) handle(c *conn, m *wire.Message) {
	if m.Type != wire.TypeRequest {
		// Clients send only requests; the broker would route anything else,
		// and here there is nowhere to route it.
		return
	}
	c.applyCred(m)
	s.countRequest(m.Topic)
	h, ok := handlers[m.Topic]
	if !ok {
		s.respondError(c, m, unknownTopic(m.Topic))
		return
	}
	if h.ownerOnly && m.Rolemask&roleOwner == 0 {
		// src/common/libflux/msg_handler.c call_handler
		s.respondError(c, m, &rpcError{errno: syscall.EPERM, msg: "Request requires owner credentials"})
		return
	}
	h.fn(s, c, m)
}

func unknownTopic(topic string) *rpcError {
	for _, svc := range services {
		if strings.HasPrefix(topic, svc+".") {
			// src/common/libflux/msg_handler.c: unmatched request
			return errorf(syscall.ENOSYS, "Unknown service method '%s'", topic)
		}
	}
	// src/broker/broker.c broker_request_sendmsg_new formats this into a
	// 64-byte buffer, so long topics are cut to 63 characters.
	msg := fmt.Sprintf("No service matching %s is registered", topic)
	if len(msg) > 63 {
		msg = msg[:63]
	}
	return &rpcError{errno: syscall.ENOSYS, msg: msg}
}

// applyCred fills in the request's credentials as connector-local does
// (src/common/librouter/auth.c auth_init_message): a guest's are always
// overwritten with the connection's; the owner's pass through when set,
// which is how flux-core's tests act as a guest.
func (c *conn) applyCred(m *wire.Message) {
	if c.rolemask&roleOwner == 0 {
		m.UserID = c.uid
		m.Rolemask = c.rolemask
		return
	}
	if m.UserID == wire.UserIDUnknown {
		m.UserID = c.uid
	}
	if m.Rolemask == wire.RoleNone {
		m.Rolemask = c.rolemask
	}
}

// response derives a response from req as flux_response_derive does: same
// topic, matchtag, credentials, routes and STREAMING flag. The route flag is
// always set: the broker's router enables routing on every request it
// receives from a client and pops its own hop on the way back.
func response(req *wire.Message, payload []byte) *wire.Message {
	m := wire.NewResponse(req, payload)
	m.Flags |= wire.FlagRoute
	m.Flags &^= wire.FlagUpstream | wire.FlagPrivate | wire.FlagUser1
	return m
}

// respond sends a success response carrying v as JSON (nil: no payload
// frame), unless the request asked for no response.
func (s *Server) respond(c *conn, req *wire.Message, v any) {
	if req.Flags&wire.FlagNoResponse != 0 {
		return
	}
	var p []byte
	if v != nil {
		b, err := marshal(v)
		if err != nil {
			s.log.Error(err, "encode response", "topic", req.Topic)
			s.respondError(c, req, &rpcError{errno: syscall.ENOMEM})
			return
		}
		p = append(b, 0)
	}
	c.send(response(req, p))
}

// respondError sends an error response: err's errno and message, or EINVAL
// with err's text when err is not an *rpcError.
func (s *Server) respondError(c *conn, req *wire.Message, err error) {
	if req.Flags&wire.FlagNoResponse != 0 {
		return
	}
	var re *rpcError
	if !errors.As(err, &re) {
		re = &rpcError{errno: syscall.EINVAL, msg: err.Error()}
	}
	errnum := re.errno
	if errnum == 0 {
		errnum = syscall.EINVAL // flux_respond_error turns 0 into EINVAL
	}
	var p []byte
	if re.msg != "" {
		p = append([]byte(re.msg), 0)
	}
	m := response(req, p)
	m.Aux1 = uint32(errnum)
	c.send(m)
}
