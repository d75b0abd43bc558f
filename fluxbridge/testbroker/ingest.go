package testbroker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// submission is a decoded, checked job-ingest.submit request.
type submission struct {
	userid   uint32
	rolemask uint32
	urgency  int
	flags    int
	jobspec  []byte
	// unwrapped is the cached decoding of J (jobspec is its jobspec).
	unwrapped *unwrappedSpec
}

// handleSubmit serves job-ingest.submit: {"J", "urgency", "flags"} ->
// {"id"}. The checks, their order, errnos and messages follow
// src/modules/job-ingest/job.c job_create_from_request (flux-core built
// without flux-security, so J must be signed with mechanism "none").
func (s *Server) handleSubmit(c *conn, req *wire.Message) {
	s.mu.Lock()
	fault := s.submitErr
	ctx := s.jobCtx
	s.mu.Unlock()
	if fault != nil {
		s.respondError(c, req, fault)
		return
	}
	sub, err := s.checkSubmit(req)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	delay := s.opts.Delays.Ingest
	if delay <= 0 {
		s.ingest(ctx, c, req, sub)
		return
	}
	// Count the goroutine under s.mu, where Close and Restart cancel ctx.
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.jobWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.jobWG.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.ingest(ctx, c, req, sub)
	}()
}

func (s *Server) checkSubmit(req *wire.Message) (*submission, error) {
	J, urgency, flags, ok := scanSubmitRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
	if !ok {
		decodeErr := errorf(syscall.EPROTO, "error decoding job request: %s", strerror(syscall.EPROTO))
		r, err := decodeRequest(req.Payload, req.Flags&wire.FlagPayload != 0)
		if err != nil {
			return nil, decodeErr
		}
		var err1, err2, err3 error
		J, err1 = r.str("J")
		urgency, err2 = r.int("urgency")
		flags, err3 = r.int("flags")
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, decodeErr
		}
	}
	owner := req.Rolemask&roleOwner != 0
	if flags&^(flagDebug|flagWaitable|flagNoValidate) != 0 {
		return nil, errorf(syscall.EPROTO, "invalid job flags")
	}
	if !owner && flags&flagNoValidate != 0 {
		return nil, errorf(syscall.EPERM, "only the instance owner can submit with FLUX_JOB_NOVALIDATE")
	}
	if urgency < urgencyMin || urgency > urgencyMax {
		return nil, errorf(syscall.EINVAL, "urgency range is [%d:%d]", urgencyMin, urgencyMax)
	}
	if !owner && urgency > urgencyDefault {
		return nil, errorf(syscall.EINVAL, "only the instance owner can submit with urgency >%d", urgencyDefault)
	}
	if !owner && flags&flagWaitable != 0 {
		return nil, errorf(syscall.EINVAL, "only the instance owner can submit with FLUX_JOB_WAITABLE")
	}
	u := s.specs.unwrap(J, s.opts.FluxSecurity)
	if u.unwrapErr {
		if u.unwrapMsg != "" {
			return nil, errorf(syscall.EINVAL, "%s", u.unwrapMsg)
		}
		return nil, errorf(syscall.EINVAL, "could not unwrap jobspec: %s", strerror(syscall.EINVAL))
	}
	signer, jobspec := u.signer, u.jobspec
	if signer != req.UserID {
		return nil, errorf(syscall.EPERM, "signer=%d != requestor=%d", signer, req.UserID)
	}
	if !owner && u.mech == "none" && !s.opts.GuestSigning {
		return nil, errorf(syscall.EPERM, "only instance owner can use sign-type=none")
	}
	if u.jsonErr != nil {
		return nil, errorf(syscall.EINVAL, "jobspec: invalid JSON: %s", u.jsonErr)
	}
	return &submission{userid: req.UserID, rolemask: req.Rolemask, urgency: urgency, flags: flags, jobspec: jobspec, unwrapped: u}, nil
}

// specCache remembers what the broker made of recently submitted J
// strings: clients submit the same jobspec again and again, and decoding,
// checking and validating it was most of the broker's work per job. The
// entries are read-only once made.
type specCache struct {
	mu sync.Mutex
	m  map[string]*unwrappedSpec
}

// specCacheSize bounds the cache; it is emptied when full.
const specCacheSize = 256

// unwrappedSpec is a J decoded: the signer and jobspec, whether the
// jobspec is JSON, and the jobspec parsed with and without validation
// (made on first use).
type unwrappedSpec struct {
	unwrapErr bool
	unwrapMsg string // flux-security's reason, with FluxSecurity
	mech      string // the signing mechanism
	signer    uint32
	jobspec   []byte
	jsonErr   error

	once   [2]sync.Once
	parsed [2]*parsedJobspec
	errs   [2]error
}

func (c *specCache) unwrap(J string, security bool) *unwrappedSpec {
	key := J
	if security {
		key = "s" + J // the two decoders do not share entries
	}
	c.mu.Lock()
	u := c.m[key]
	c.mu.Unlock()
	if u != nil {
		return u
	}
	u = &unwrappedSpec{mech: "none"}
	if security {
		if e, err := sign.Parse(J); err != nil {
			u.unwrapErr = true
			u.unwrapMsg = strings.TrimSuffix(err.Error(), ": "+sign.ErrInvalid.Error())
		} else if e.UserID < 0 || e.UserID > math.MaxUint32 {
			u.unwrapErr = true
			u.unwrapMsg = fmt.Sprintf("signer=%d out of range", e.UserID)
		} else {
			u.signer, u.jobspec, u.mech = uint32(e.UserID), e.Payload, e.Mechanism
			u.jsonErr = checkJSON(u.jobspec)
		}
	} else if signer, jobspec, err := signNoneUnwrap(J); err != nil {
		u.unwrapErr = true
	} else {
		u.signer, u.jobspec = signer, jobspec
		u.jsonErr = checkJSON(jobspec)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= specCacheSize {
		c.m = make(map[string]*unwrappedSpec)
	}
	c.m[key] = u
	c.mu.Unlock()
	return u
}

// parse returns parseJobspec(u.jobspec, validate), computed once.
func (u *unwrappedSpec) parse(validate bool) (*parsedJobspec, error) {
	i := 0
	if validate {
		i = 1
	}
	u.once[i].Do(func() { u.parsed[i], u.errs[i] = parseJobspec(u.jobspec, validate) })
	return u.parsed[i], u.errs[i]
}

// ingest validates the jobspec (job-ingest's validator), then creates the
// job, posts its submit event, answers the submit request and starts the
// job's lifecycle.
func (s *Server) ingest(ctx context.Context, c *conn, req *wire.Message, sub *submission) {
	var spec *parsedJobspec
	var err error
	if sub.unwrapped != nil {
		spec, err = sub.unwrapped.parse(sub.flags&flagNoValidate == 0)
	} else {
		spec, err = parseJobspec(sub.jobspec, sub.flags&flagNoValidate == 0)
	}
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	queue, err := s.checkQueue(spec.queue)
	if err != nil {
		s.respondError(c, req, err)
		return
	}
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	deps, err := s.checkDependenciesLocked(sub.userid, spec.deps)
	if err != nil {
		s.mu.Unlock()
		s.respondError(c, req, err)
		return
	}
	j := &jobRecord{
		id:          s.ids.next(),
		userid:      sub.userid,
		urgency:     sub.urgency,
		flags:       sub.flags,
		jobspecText: string(sub.jobspec),
		jobspec:     spec.redacted,
		name:        spec.name,
		command:     slices.Clone(spec.command), // spec may be shared (specCache)
		ntasks:      spec.ntasks,
		ncores:      spec.ncores,
		duration:    spec.duration,
		cwd:         spec.cwd,
		queue:       queue,
		runDuration: spec.runDuration,
		waitStatus:  -1,
		wake:        make(chan struct{}, 1),
	}
	if s.listLag > 0 {
		j.listedAt = time.Now().Add(s.listLag)
	}
	s.jobs[j.id] = j
	s.order = append(s.order, j)
	s.maxJobID = max(s.maxJobID, j.id)
	// src/modules/job-manager/submit.c: the submit event's context.
	s.postLocked(j, "submit", obj{
		{"userid", int64(j.userid)},
		{"urgency", j.urgency},
		{"flags", j.flags},
		{"version", 1},
	})
	s.addDependenciesLocked(j, deps)
	s.startWaitingWatchesLocked(j)
	s.respond(c, req, obj{{"id", j.id}})
	s.log.V(1).Info("job submitted", "id", j.id.String(), "userid", j.userid, "urgency", j.urgency, "command", j.command)
	s.jobWG.Add(1)
	s.mu.Unlock()
	go s.runJob(ctx, j)
}

// signNoneUnwrap decodes J signed with mechanism "none": base64(header) "."
// base64(jobspec) ".none", the header being NUL-separated key/value pairs
// version=i1, userid=i<uid>, mechanism=snone
// (src/common/libjob/sign_none.c sign_none_unwrap).
func signNoneUnwrap(J string) (uint32, []byte, error) {
	errInval := errors.New("invalid signed jobspec")
	h, rest, ok := strings.Cut(J, ".")
	if !ok {
		return 0, nil, errInval
	}
	p, mech, ok := strings.Cut(rest, ".")
	if !ok || mech != "none" {
		return 0, nil, errInval
	}
	header, err := decodeBase64(h)
	if err != nil {
		return 0, nil, errInval
	}
	fields := strings.Split(string(header), "\x00")
	if len(fields) > 0 && fields[len(fields)-1] == "" {
		fields = fields[:len(fields)-1]
	}
	if len(fields)%2 != 0 {
		return 0, nil, errInval
	}
	var version, userid, mechanism string
	for i := 0; i < len(fields); i += 2 {
		switch fields[i] {
		case "version":
			version = fields[i+1]
		case "userid":
			userid = fields[i+1]
		case "mechanism":
			mechanism = fields[i+1]
		default:
			return 0, nil, errInval
		}
	}
	if version != "i1" || mechanism != "snone" || len(userid) < 2 || userid[0] != 'i' || userid[1] < '0' || userid[1] > '9' {
		return 0, nil, errInval
	}
	uid, err := strconv.ParseUint(userid[1:], 10, 32)
	if err != nil {
		return 0, nil, errInval
	}
	payload, err := decodeBase64(p)
	if err != nil {
		return 0, nil, errInval
	}
	return uint32(uid), payload, nil
}

func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// checkJSON reports why data is not a JSON object or array, in words close
// to jansson's json_loadb (which without JSON_DECODE_ANY wants an object or
// an array at the top).
func checkJSON(data []byte) error {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return errors.New("'[' or '{' expected near end of file")
	}
	if trimmed[0] != '{' && trimmed[0] != '[' {
		tok := trimmed
		if i := bytes.IndexAny(tok, " \t\r\n,:[]{}\""); i > 0 {
			tok = tok[:i]
		} else if i == 0 {
			tok = tok[:1]
		}
		return fmt.Errorf("'[' or '{' expected near '%s'", tok)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return nil
}

// parsedJobspec is what the simulation needs from a jobspec.
type parsedJobspec struct {
	redacted    any
	name        string
	command     []string
	ntasks      int
	ncores      int
	duration    float64
	cwd         string
	queue       string
	runDuration *time.Duration
	deps        []job.Dependency
}

// parseJobspec validates a jobspec as job-ingest's default validator
// plugin does (errors are EPERM with the validator's message, as the
// submit-invalid transcript shows) and extracts the fields the simulation
// uses. With validate false (FLUX_JOB_NOVALIDATE) only extraction runs.
func parseJobspec(data []byte, validate bool) (*parsedJobspec, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errorf(syscall.EINVAL, "jobspec: invalid JSON: %s", err)
	}
	m, isMap := v.(map[string]any)
	if validate {
		if err := validateJobspec(data); err != nil {
			return nil, err
		}
	}
	if !isMap {
		m = map[string]any{}
	}
	p := &parsedJobspec{ntasks: 1, ncores: 1}
	tasks, _ := m["tasks"].([]any)
	if len(tasks) > 0 {
		if t, ok := tasks[0].(map[string]any); ok {
			if cmd, ok := t["command"].([]any); ok {
				for _, a := range cmd {
					if s, ok := a.(string); ok {
						p.command = append(p.command, s)
					}
				}
			}
			slots := countSlots(m["resources"])
			if cnt, ok := t["count"].(map[string]any); ok {
				if n := intOf(cnt["per_slot"]); n > 0 {
					p.ntasks = n * max(slots, 1)
				} else if n := intOf(cnt["total"]); n > 0 {
					p.ntasks = n
				}
			}
		}
	}
	if n := countCores(m["resources"]); n > 0 {
		p.ncores = n
	}
	system := dig(m, "attributes", "system")
	if name, ok := dig(system, "job")["name"].(string); ok && name != "" {
		p.name = name
	} else if len(p.command) > 0 {
		// job-list names a job after its command's base name
		// (src/modules/job-list/job_data.c).
		p.name = path.Base(p.command[0])
	}
	p.duration = floatOf(system["duration"])
	p.cwd, _ = system["cwd"].(string)
	p.queue, _ = system["queue"].(string)
	if list, ok := system["dependencies"].([]any); ok {
		for _, d := range list {
			m, _ := d.(map[string]any)
			scheme, _ := m["scheme"].(string)
			value, _ := m["value"].(string)
			p.deps = append(p.deps, job.Dependency{Scheme: scheme, Value: value})
		}
	}
	if rd, ok := dig(system, "exec", "test")["run_duration"]; ok {
		var d time.Duration
		var err error
		switch x := rd.(type) {
		case string:
			d, err = parseFSD(x)
		case json.Number:
			var f float64
			f, err = x.Float64()
			d = time.Duration(f * float64(time.Second))
		}
		if err == nil {
			p.runDuration = &d
		}
	}
	p.redacted = redact(data)
	return p, nil
}

// validateJobspec runs fluxbridge/job's validation, which reproduces
// flux-core's default jobspec validator (the Python JobspecV1 checks) and
// its messages ("Missing key (tasks)"). The broker answers a rejected
// jobspec with EPERM, as the submit-invalid transcripts show.
func validateJobspec(data []byte) error {
	if _, err := job.Parse(data); err != nil {
		var je *job.JobspecError
		if errors.As(err, &je) {
			return errorf(syscall.EPERM, "%s", je.Message)
		}
		return errorf(syscall.EPERM, "%s", err)
	}
	return nil
}

// dig follows keys through nested objects; a missing level gives an empty
// map.
func dig(v any, keys ...string) map[string]any {
	m, _ := v.(map[string]any)
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	if m == nil {
		return map[string]any{}
	}
	return m
}

func intOf(v any) int {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		if err == nil {
			return int(n)
		}
	case map[string]any: // a range count {"min": N, ...}
		return intOf(x["min"])
	}
	return 0
}

func floatOf(v any) float64 {
	if x, ok := v.(json.Number); ok {
		f, err := x.Float64()
		if err == nil {
			return f
		}
	}
	return 0
}

// countSlots returns the number of task slots the resources request.
func countSlots(v any) int {
	list, _ := v.([]any)
	n := 0
	for _, r := range list {
		rm, _ := r.(map[string]any)
		count := max(intOf(rm["count"]), 1)
		if rm["type"] == "slot" {
			n += count
		} else {
			n += count * countSlots(rm["with"])
		}
	}
	return n
}

// countCores returns the number of cores the resources request.
func countCores(v any) int {
	list, _ := v.([]any)
	n := 0
	for _, r := range list {
		rm, _ := r.(map[string]any)
		count := max(intOf(rm["count"]), 1)
		if rm["type"] == "core" {
			n += count
		} else {
			n += count * countCores(rm["with"])
		}
	}
	return n
}

// redact returns the jobspec without attributes.system.environment, as
// job-manager hands it to journal consumers (jobspec_redacted), keys in the
// submitted order.
func redact(data []byte) any {
	v, err := decodeOrdered(data)
	if err != nil {
		return nil
	}
	top, ok := v.(obj)
	if !ok {
		return v
	}
	out := make(obj, 0, len(top))
	for _, e := range top {
		if a, ok := e.v.(obj); ok && e.k == "attributes" {
			attrs := make(obj, 0, len(a))
			for _, ae := range a {
				if sys, ok := ae.v.(obj); ok && ae.k == "system" {
					sys2 := make(obj, 0, len(sys))
					for _, se := range sys {
						if se.k != "environment" {
							sys2 = append(sys2, se)
						}
					}
					ae = kv{ae.k, sys2}
				}
				attrs = append(attrs, ae)
			}
			e = kv{e.k, attrs}
		}
		out = append(out, e)
	}
	return out
}

// strerror is glibc's strerror text for errno: Go's text with a capital
// first letter ("Invalid argument", "Protocol error").
func strerror(errno syscall.Errno) string {
	s := errno.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// scanSubmitRequest reads the usual shape of a job-ingest.submit payload,
// {"J":"...","urgency":N,"flags":N} NUL-terminated, with a J that needs
// no unescaping (a signed J is base64 and dots), without encoding/json;
// anything else is left to decodeRequest (ok false).
func scanSubmitRequest(payload []byte, hasPayload bool) (J string, urgency, flags int, ok bool) {
	if !hasPayload || len(payload) < 2 || payload[len(payload)-1] != 0 {
		return "", 0, 0, false
	}
	b := payload[:len(payload)-1]
	const jKey = `{"J":"`
	if !bytes.HasPrefix(b, []byte(jKey)) {
		return "", 0, 0, false
	}
	b = b[len(jKey):]
	end := bytes.IndexByte(b, '"')
	if end < 0 {
		return "", 0, 0, false
	}
	for _, c := range b[:end] {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return "", 0, 0, false
		}
	}
	J = string(b[:end])
	b = b[end+1:]
	var okU, okF bool
	if urgency, b, okU = scanIntField(b, `,"urgency":`); !okU {
		return "", 0, 0, false
	}
	if flags, b, okF = scanIntField(b, `,"flags":`); !okF {
		return "", 0, 0, false
	}
	if len(b) != 1 || b[0] != '}' {
		return "", 0, 0, false
	}
	return J, urgency, flags, true
}

// scanIntField reads key (with its leading comma and colon) and a
// non-negative decimal integer of at most 9 digits after it.
func scanIntField(b []byte, key string) (int, []byte, bool) {
	if !bytes.HasPrefix(b, []byte(key)) {
		return 0, b, false
	}
	b = b[len(key):]
	n, i := 0, 0
	for ; i < len(b) && i < 10 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int(b[i]-'0')
	}
	if i == 0 || i > 9 || (i > 1 && b[0] == '0') {
		return 0, b, false
	}
	return n, b[i:], true
}
