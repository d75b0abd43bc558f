package controllers

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge/mungetest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// sshUser is a user of the host behind the in-process SSH server: its
// login key and its uid.
type sshUser struct {
	name string
	uid  uint32
	key  []byte // private key, OpenSSH PEM
	pub  ssh.PublicKey
}

// TestEnvtestAccounts: a FluxEndpoint with two namespace → account
// mappings on a multi-user instance (the test broker as flux-core built
// with flux-security: guests allowed, J decoded as job-ingest does). The
// SSH server logs each user in with its own key only and runs its relay
// and its forwarded unix sockets with the user's uid (peer credentials),
// so the broker and a real munged (Debian's munge) see the user as a
// process of theirs would be seen. Each FluxJob's Flux job has the
// userid of its namespace's account, signed with munge through that
// account's SSH connection (or, for carol, with curve and the certificate
// a CA issued for her uid, munged never asked); a namespace no account selects waits
// (NoAccount); the owner-only waitable flag is refused before
// submission (OwnerOnly) with flux-core's words; nothing a FluxJob
// carries picks the account.
func TestEnvtestAccounts(t *testing.T) {
	if os.Geteuid() != 0 {
		const why = "needs root: the SSH server connects to the broker and munged as each user's uid"
		if os.Getenv("CI") == "true" {
			t.Fatal(why + " (CI=true: .ci/run runs as root)")
		}
		t.Skip(why)
	}
	munged := mungetest.Start(t, mungetest.Options{})
	dir, err := os.MkdirTemp("", "accounts-broker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the guests reach the socket, as /run/flux is 0755
		t.Fatal(err)
	}
	h := newHarness(t, testbroker.Options{}, Options{})
	b := h.newBroker(testbroker.Options{Dir: dir, AllowGuests: true, FluxSecurity: true})

	users := map[string]*sshUser{}
	for i, name := range []string{"fluxbot", "alice", "bob", "carol"} {
		signer, pemKey, err := fluxtest.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		users[name] = &sshUser{name: name, uid: uint32(os.Getuid()), key: pemKey, pub: signer.PublicKey()}
		if i > 0 {
			users[name].uid = 64000 + uint32(i)
		}
	}
	dialAs := func(ctx context.Context, user, path string) (net.Conn, error) {
		u := users[user]
		if u.uid == uint32(os.Getuid()) {
			return fluxtest.DialUnix(ctx, user, path)
		}
		return fluxtest.DialUnixAs(ctx, path, u.uid, u.uid)
	}
	userKeys := map[string][]ssh.PublicKey{}
	for name, u := range users {
		userKeys[name] = []ssh.PublicKey{u.pub}
	}
	srv, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{
		UserKeys:    userKeys,
		UserExec:    func(user string) fluxtest.ExecFunc { return fluxtest.RelayAs(dialAs, user) },
		StreamLocal: dialAs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	// carol signs with curve: a certificate a CA issued for her uid.
	ca, err := sign.NewCert()
	if err != nil {
		t.Fatal(err)
	}
	carolCert, err := sign.NewCert()
	if err != nil {
		t.Fatal(err)
	}
	carolCert.SetMeta("userid", sign.KindInt64, fmt.Sprint(users["carol"].uid))
	if err := sign.SignCert(ca, carolCert); err != nil {
		t.Fatal(err)
	}
	for name, u := range users {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "ssh-" + name}, Type: corev1.SecretTypeSSHAuth,
			Data: map[string][]byte{fluxjobv1.SSHPrivateKeyKey: u.key, fluxjobv1.SSHKnownHostsKey: srv.KnownHosts}}
		if name == "carol" {
			sec.Data[fluxjobv1.CurveCertKey], sec.Data[fluxjobv1.CurveKeyKey] = carolCert.MarshalPublic(), carolCert.MarshalSecret()
		}
		if err := h.c.Create(context.Background(), sec); err != nil {
			t.Fatal(err)
		}
	}
	// h.ns is team a; team b and an unmapped namespace.
	var nsA corev1.Namespace
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: h.ns}, &nsA); err != nil {
		t.Fatal(err)
	}
	nsA.Labels = map[string]string{"team": "a"}
	if err := h.c.Update(context.Background(), &nsA); err != nil {
		t.Fatal(err)
	}
	nsB := h.newNamespace("b", map[string]string{"team": "b"})
	nsC := h.newNamespace("c", map[string]string{"team": "c"})
	nsD := h.newNamespace("d", map[string]string{"team": "d"})

	// team a may use the owner's powers by the manager's policy; its
	// account is a guest all the same, which Flux decides.
	h.opts.PrivilegedNamespaces = []string{h.ns}
	h.startWithInstances(func(ir *FluxEndpointReconciler) {
		ir.Namespace = h.ns
		ir.Transports = broker.DefaultTransports(h.cfg)
	})
	account := func(name, team string) fluxjobv1.FluxEndpointAccount {
		a := fluxjobv1.FluxEndpointAccount{Name: name, User: name, SecretRef: fluxjobv1.SecretReference{Name: "ssh-" + name},
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}, MungeSocket: munged.Socket}
		if name == "carol" {
			a.Signing, a.MungeSocket = fluxjobv1.SigningCurve, ""
		}
		return a
	}
	name := h.ns + "-hpc"
	fe := &fluxjobv1.FluxEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fluxjobv1.FluxEndpointSpec{
		Connection: fluxjobv1.FluxEndpointConnection{URI: srv.URI("fluxbot", b.SocketPath()),
			SecretRef: &fluxjobv1.SecretReference{Name: "ssh-fluxbot"}},
		NamespaceSelector: &metav1.LabelSelector{},
		Accounts:          []fluxjobv1.FluxEndpointAccount{account("alice", "a"), account("bob", "b"), account("carol", "d")},
	}}
	if err := h.c.Create(context.Background(), fe); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.c.Delete(context.Background(), fe) })
	fi := h.waitInstance(name, 30*time.Second, "Ready with every account connected", func(fi *fluxjobv1.FluxEndpoint) bool {
		if !instanceReady(fi) || len(fi.Status.Accounts) != 3 {
			return false
		}
		for _, a := range fi.Status.Accounts {
			if !a.Connected || a.UserID == nil {
				return false
			}
		}
		return true
	})
	for _, a := range fi.Status.Accounts {
		if want := int64(users[a.Name].uid); *a.UserID != want {
			t.Errorf("account %s: status userID %d, want %d (the uid munged vouches for)", a.Name, *a.UserID, want)
		}
	}

	// The owner's view of the broker, to read each job's userid.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	owner, err := flux.Dial(ctx, b.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	userOf := func(id int64) uint32 {
		info, err := job.ListID(ctx, owner, job.ID(id), "userid")
		if err != nil {
			t.Fatalf("job %d: %v", id, err)
		}
		return info.UserID
	}

	// Each namespace's job runs as its account: the three FluxJobs have
	// the same spec, only their namespaces differ.
	h.createIn(h.ns, "as-alice", onInstance(name, "true"))
	h.createIn(nsB, "as-bob", onInstance(name, "true"))
	h.createIn(nsD, "as-carol", onInstance(name, "true"))
	for _, c := range []struct{ ns, name, user string }{{h.ns, "as-alice", "alice"}, {nsB, "as-bob", "bob"}, {nsD, "as-carol", "carol"}} {
		obj := h.waitForIn(c.ns, c.name, 30*time.Second, "Succeeded", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSucceeded })
		if got, want := userOf(obj.Status.JobID), users[c.user].uid; got != want {
			t.Errorf("%s/%s: Flux userid %d, want %d (account %s)", c.ns, c.name, got, want, c.user)
		}
	}
	// munge credentials came through each account's own SSH connection.
	fwd := srv.Forwards()
	for _, u := range []string{"alice", "bob"} {
		if !slices.Contains(fwd, u+":"+munged.Socket) {
			t.Errorf("no munged forwarding for %s: %q", u, fwd)
		}
	}
	if slices.ContainsFunc(fwd, func(f string) bool { return strings.HasPrefix(f, "fluxbot:") || strings.HasPrefix(f, "carol:") }) {
		t.Errorf("the endpoint's own connection or the curve account asked munged: %q", fwd)
	}

	// A held job of alice's: Flux refuses a guest's raise above 16 (team a
	// is privileged by the manager's policy, so the broker decides).
	held := onInstance(name, "true")
	held.Urgency = int32Ptr(0)
	h.createIn(h.ns, "held", held)
	h.waitFor("held", 30*time.Second, "submitted", func(o *fluxjobv1.FluxJob) bool { return o.Status.JobID != 0 })
	h.patchSpec("held", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = int32Ptr(20) })
	obj := h.waitFor("held", 30*time.Second, "UrgencyApplied=False UrgencyRejected",
		conditionIs(fluxjobv1.ConditionUrgencyApplied, metav1.ConditionFalse, fluxjobv1.ReasonUrgencyRejected))
	if c := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionUrgencyApplied); !strings.Contains(c.Message, "guests can only adjust urgency <= default") {
		t.Errorf("urgency 20 as a guest: %q", c.Message)
	}
	h.waitEvent("held", fluxjobv1.ReasonUrgencyRejected, 10*time.Second)
	if got := userOf(obj.Status.JobID); got != users["alice"].uid {
		t.Errorf("held: userid %d", got)
	}

	// No account for team c: it waits, and nothing reaches Flux.
	jobsBefore := len(b.Jobs())
	h.createIn(nsC, "unmapped", onInstance(name, "true"))
	h.waitForIn(nsC, "unmapped", 30*time.Second, "InstanceAdmitted=False NoAccount",
		conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonNoAccount))

	// The waitable flag is the owner's: refused before submission, in a
	// privileged namespace too.
	spec := onInstance(name, "true")
	spec.Waitable = true
	h.createIn(h.ns, "waitable", spec)
	obj = h.waitForIn(h.ns, "waitable", 30*time.Second, "Failed OwnerOnly", func(o *fluxjobv1.FluxJob) bool {
		c := meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionFailed)
		return o.Status.Phase == fluxjobv1.PhaseFailed && c != nil && c.Reason == fluxjobv1.ReasonOwnerOnly
	})
	if !strings.Contains(obj.Status.Message, "only the instance owner can submit with FLUX_JOB_WAITABLE") || obj.Status.JobID != 0 {
		t.Errorf("waitable as a guest: message %q jobID %d", obj.Status.Message, obj.Status.JobID)
	}
	h.waitEvent("waitable", fluxjobv1.ReasonOwnerOnly, 10*time.Second)
	if n := len(b.Jobs()); n != jobsBefore {
		t.Errorf("the broker got %d jobs after the refusals", n-jobsBefore)
	}

	// Mapping team c to bob admits the waiting FluxJob, as bob.
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: name}, fe); err != nil {
		t.Fatal(err)
	}
	fe.Spec.Accounts[1].NamespaceSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"b", "c"}}}}
	if err := h.c.Update(context.Background(), fe); err != nil {
		t.Fatal(err)
	}
	obj = h.waitForIn(nsC, "unmapped", 30*time.Second, "Succeeded", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSucceeded })
	if got := userOf(obj.Status.JobID); got != users["bob"].uid {
		t.Errorf("team c after the mapping: userid %d, want bob's %d", got, users["bob"].uid)
	}
}
