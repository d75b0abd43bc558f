// Command guestclient submits one job to a Flux instance through the
// project's Go client, signed as the user it runs as: the real-broker test
// of guest submission (test/realflux TestGuestMunge) runs it as another uid
// than its own, so that the broker and munged see a guest.
//
//	guestclient -uri local:///run/flux/local -sign munge -munge /run/munge/munge.socket.2 < jobspec.json
//
// -sign is munge (job.MungeSigner on the connection), none (sign.None as
// this uid), munge-as=UID (a munge credential whose envelope claims UID),
// curve (sign.Curve as this uid with the certificate -cert names: NAME.pub
// and NAME, flux-security's files) or presigned (stdin is a J, sent as is). -urgency, -waitable and
// -novalidate are the submission's options; -adjust U1,U2,... then sets
// the submitted job's urgency to each in turn (job-manager.urgency). It
// prints one JSON object: {"id": "ƒ...", "J": "...", "error": "...",
// "adjust": [{"urgency": U, "message": "...", "errno": N}, ...]}, and
// exits 0 whether or not the broker accepted the job (1 on a usage error).
//
// With -sshd AUTHORIZED_KEY (an authorized_keys line) it is instead an
// SSH server for the ssh:// test: fluxbridge/flux/fluxtest's server on
// 127.0.0.1, relaying to the broker and forwarding unix sockets as the
// user it runs as. It prints {"addr": "...", "known_hosts": "..."} and
// serves until its standard input closes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// recorder keeps the J a Signer made.
type recorder struct {
	sign.Signer
	j string
}

func (r *recorder) Wrap(ctx context.Context, p []byte) (string, error) {
	j, err := r.Signer.Wrap(ctx, p)
	r.j = j
	return j, err
}

func main() {
	uri := flag.String("uri", "", "broker URI")
	mode := flag.String("sign", "munge", "munge, none, munge-as=UID or presigned")
	socket := flag.String("munge", "", "munged's socket on the broker's host")
	certPath := flag.String("cert", "", "the curve certificate (NAME: NAME.pub and NAME)")
	sshd := flag.String("sshd", "", "serve SSH for this authorized key instead")
	urgency := flag.Int("urgency", job.UrgencyDefault, "the job's urgency")
	waitable := flag.Bool("waitable", false, "submit with the waitable flag")
	novalidate := flag.Bool("novalidate", false, "submit with the novalidate flag")
	adjust := flag.String("adjust", "", "urgencies to set on the job after submitting it, comma-separated")
	flag.Parse()
	if *sshd != "" {
		serveSSH(*sshd)
		return
	}
	in, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestclient:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := struct {
		ID    string `json:"id,omitempty"`
		J     string `json:"J,omitempty"`
		Error string `json:"error,omitempty"`
		// Message and Errno are the broker's, when it refused.
		Message string `json:"message,omitempty"`
		Errno   int    `json:"errno,omitempty"`
		// Adjust are the answers to -adjust.
		Adjust []adjusted `json:"adjust,omitempty"`
	}{}
	defer func() {
		_ = json.NewEncoder(os.Stdout).Encode(out)
	}()
	c, err := flux.Dial(ctx, *uri)
	if err != nil {
		out.Error = err.Error()
		return
	}
	defer c.Close()
	opts := job.SubmitOptions{Urgency: job.Urgency(*urgency), Waitable: *waitable, NoValidate: *novalidate}
	rec := &recorder{}
	switch {
	case *mode == "munge":
		rec.Signer = job.MungeSigner(c, *socket)
	case *mode == "none":
		rec.Signer = sign.None{UserID: uint32(os.Getuid())}
	case strings.HasPrefix(*mode, "munge-as="):
		uid, err := strconv.ParseUint(strings.TrimPrefix(*mode, "munge-as="), 10, 32)
		if err != nil {
			fmt.Fprintln(os.Stderr, "guestclient: bad uid:", err)
			os.Exit(1)
		}
		m := job.MungeSigner(c, *socket)
		u := uint32(uid)
		m.UserID = &u
		rec.Signer = m
	case *mode == "curve":
		pub, err1 := os.ReadFile(*certPath + ".pub")
		sec, err2 := os.ReadFile(*certPath)
		if err1 != nil || err2 != nil {
			fmt.Fprintln(os.Stderr, "guestclient: -cert:", err1, err2)
			os.Exit(1)
		}
		cert, err := sign.ParseCert(pub, sec)
		if err != nil {
			fmt.Fprintln(os.Stderr, "guestclient: -cert:", err)
			os.Exit(1)
		}
		rec.Signer = &sign.Curve{Cert: cert, UserID: uint32(os.Getuid()), MaxTTL: 60 * time.Second}
	case *mode == "presigned":
		opts.PreSigned = true
	default:
		fmt.Fprintln(os.Stderr, "guestclient: unknown -sign", *mode)
		os.Exit(1)
	}
	if rec.Signer != nil {
		opts.Signer = rec
	}
	id, err := job.Submit(ctx, c, in, opts)
	out.J = rec.j
	if err != nil {
		out.Error = err.Error()
		var fe *flux.Error
		if errors.As(err, &fe) {
			out.Message, out.Errno = fe.Message, int(fe.Errno)
		}
		return
	}
	out.ID = id.String()
	for _, f := range strings.FieldsFunc(*adjust, func(r rune) bool { return r == ',' }) {
		u, err := strconv.Atoi(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "guestclient: bad -adjust:", err)
			os.Exit(1)
		}
		a := adjusted{Urgency: u}
		if _, err := job.SetUrgency(ctx, c, id, u); err != nil {
			a.Message = err.Error()
			var fe *flux.Error
			if errors.As(err, &fe) {
				a.Message, a.Errno = fe.Message, int(fe.Errno)
			}
		}
		out.Adjust = append(out.Adjust, a)
	}
}

// adjusted is the broker's answer to one urgency change ("" and 0: done).
type adjusted struct {
	Urgency int    `json:"urgency"`
	Message string `json:"message,omitempty"`
	Errno   int    `json:"errno,omitempty"`
}

// serveSSH runs the SSH server of -sshd until stdin closes.
func serveSSH(authorized string) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorized))
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestclient: -sshd:", err)
		os.Exit(1)
	}
	srv, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{
		AuthorizedKeys: []ssh.PublicKey{key},
		StreamLocal:    fluxtest.DialUnix,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestclient: -sshd:", err)
		os.Exit(1)
	}
	defer srv.Close()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"addr": srv.Addr, "known_hosts": string(srv.KnownHosts)})
	_, _ = io.Copy(io.Discard, os.Stdin)
}
