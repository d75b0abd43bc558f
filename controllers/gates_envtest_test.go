package controllers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// Gates against forged submission markers (issue 19 item 1)
//
// The marker annotation is metadata whoever may edit a FluxJob can write.
// These tests forge it every way a user can (garbled or copied from
// another object at creation; forged with the object's own uid or garbled
// by a later update) against each gate: --allowed-namespaces,
// --privileged-namespaces, a FluxEndpoint's namespaceSelector, and
// spec.instance. The oracle is the test broker's count of job-ingest.submit
// requests, read after the controller's own verdict is in the status.

// submitTopic is the RPC a submission makes.
const submitTopic = "job-ingest.submit"

// forgery is one way a user writes a FluxJob's submission marker.
type forgery struct {
	name string
	// atCreate: written in the FluxJob's manifest; else by an update of
	// the existing object (before the manager runs).
	atCreate bool
	// value returns the annotation, given the object's uid (empty at
	// creation) and the instance the forger wants.
	value func(uid types.UID, instance string) string
}

// forgeries are the markers a user can write, at create and by update.
var forgeries = []forgery{
	{name: "garbled-at-create", atCreate: true, value: func(types.UID, string) string { return "x" }},
	{name: "copied-at-create", atCreate: true, value: func(_ types.UID, inst string) string {
		return forgedMarker("0c1e0000-0000-4000-8000-000000000000", inst) // another object's
	}},
	{name: "forged-by-update", value: forgedMarker},
	{name: "garbled-by-update", value: func(types.UID, string) string { return `{"uid":` }},
}

// forgedMarker is a well-formed marker of uid, a minute old, naming
// instance.
func forgedMarker(uid types.UID, instance string) string {
	v, err := submitMarker{UID: uid, At: fluxjobv1.NewPreciseTime(time.Now().Add(-time.Minute)), Instance: instance}.encode()
	if err != nil {
		panic(err)
	}
	return v
}

// createForged creates one FluxJob per forgery of fs in namespace ns
// (named <prefix>-<forgery>), with the marker naming instance written as
// the forgery says; the manager must not be running yet. It returns the
// names.
func (h *harness) createForged(fs []forgery, ns, prefix string, spec fluxjobv1.FluxJobSpec, instance string) []string {
	h.t.Helper()
	ctx := context.Background()
	var names []string
	for _, f := range fs {
		obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: prefix + "-" + f.name}, Spec: *spec.DeepCopy()}
		if f.atCreate {
			obj.Annotations = map[string]string{fluxjobv1.SubmitAttemptAnnotation: f.value("", instance)}
		}
		if err := h.c.Create(ctx, obj); err != nil {
			h.t.Fatalf("creating FluxJob %s: %v", obj.Name, err)
		}
		if !f.atCreate {
			base := obj.DeepCopy()
			obj.Annotations = map[string]string{fluxjobv1.SubmitAttemptAnnotation: f.value(obj.UID, instance)}
			if err := h.c.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
				h.t.Fatalf("forging the marker of %s: %v", obj.Name, err)
			}
		}
		names = append(names, obj.Name)
	}
	return names
}

// settled is the barrier of these tests: the controller decided (a
// terminal phase, or the instance refused the namespace).
func settled(o *fluxjobv1.FluxJob) bool {
	return o.Status.Phase.IsTerminal() || conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, "")(o)
}

// TestEnvtestForgedMarkerGates: no forged, garbled or copied marker, set
// at create or by a later update, gets a FluxJob past a gate; the test
// broker receives no submission from a FluxJob out of policy. Against
// 7f7e1d7 every forged case ran (the marker switched the gates off).
func TestEnvtestForgedMarkerGates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		spec   fluxjobv1.FluxJobSpec
		reason string // the condition reason every FluxJob must show
	}{
		{name: "namespace", opts: Options{AllowedNamespaces: []string{"somewhere-else"}, AdoptWindow: time.Second},
			spec: cmdSpec("true"), reason: fluxjobv1.ReasonNamespaceNotAllowed},
		{name: "privilege-urgency", opts: Options{AdoptWindow: time.Second},
			spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: ptrTo(int32(31))}, reason: fluxjobv1.ReasonPrivilegeNotAllowed},
		{name: "privilege-waitable", opts: Options{AdoptWindow: time.Second},
			spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}, Waitable: true}, reason: fluxjobv1.ReasonPrivilegeNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testbroker.Options{}, tc.opts)
			names := h.createForged(forgeries, h.ns, "g", tc.spec, "default")
			h.start()
			for _, name := range names {
				obj := h.waitFor(name, 60*time.Second, "the controller's verdict", settled)
				requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, tc.reason)
			}
			if n, jobs := h.broker.RequestCount(submitTopic), h.broker.Jobs(); n != 0 || len(jobs) != 0 {
				t.Fatalf("out-of-policy FluxJobs reached Flux: %d submit requests, jobs %v", n, jobs)
			}
		})
	}
}

// TestEnvtestForgedMarkerInstances: a marker's instance neither overrides
// spec.instance nor gets a FluxJob past a FluxEndpoint's
// namespaceSelector. Instance "open" admits every namespace, "closed"
// none; every forged marker names "closed". FluxJobs with
// spec.instance=open run on open only; FluxJobs with spec.instance=closed
// wait (NamespaceNotAdmitted); FluxJobs with no spec.instance and open as
// the default run on open or wait: closed receives nothing.
func TestEnvtestForgedMarkerInstances(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: time.Second})
	openB, closedB := h.broker, h.newBroker(testbroker.Options{})
	open := h.createInstance("open", openB, &metav1.LabelSelector{}, true)
	closed := h.createInstance("closed", closedB, &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}}, false)
	toOpen := h.createForged(forgeries, h.ns, "open", onInstance(open, "true"), closed)
	toClosed := h.createForged(forgeries, h.ns, "closed", onInstance(closed, "true"), closed)
	byDefault := h.createForged(forgeries, h.ns, "default", cmdSpec("true"), closed)
	h.startWithInstances()

	for _, name := range toOpen {
		obj := h.waitPhase(name, fluxjobv1.PhaseSucceeded, 60*time.Second)
		if obj.Status.Instance != open || !brokerHasJob(openB, obj.Status.JobID) {
			t.Errorf("%s: status.instance %q, job %d (open broker's jobs %v): want it on %s", name, obj.Status.Instance, obj.Status.JobID, openB.Jobs(), open)
		}
	}
	for _, name := range toClosed {
		obj := h.waitFor(name, 60*time.Second, "the controller's verdict", func(o *fluxjobv1.FluxJob) bool {
			// InstanceNotFound is transient, as NoDefaultInstance below.
			return settled(o) && !conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonInstanceNotFound)(o)
		})
		requireCondition(t, obj, fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonNamespaceNotAdmitted)
	}
	for _, name := range byDefault {
		obj := h.waitFor(name, 60*time.Second, "the controller's verdict", func(o *fluxjobv1.FluxJob) bool {
			// NoDefaultInstance is transient: the FluxJob was routed
			// before the FluxEndpoint reconciler registered "open"; it is
			// poked again when it does.
			return o.Status.Phase == fluxjobv1.PhaseSucceeded ||
				settled(o) && !conditionIs(fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonNoDefaultInstance)(o)
		})
		if obj.Status.Phase != fluxjobv1.PhaseSucceeded {
			requireCondition(t, obj, fluxjobv1.ConditionInstanceAdmitted, metav1.ConditionFalse, fluxjobv1.ReasonNamespaceNotAdmitted)
		}
	}
	if n, jobs := closedB.RequestCount(submitTopic), closedB.Jobs(); n != 0 || len(jobs) != 0 {
		t.Fatalf("the closed instance received %d submit requests (jobs %v): a marker got FluxJobs past its namespaceSelector or spec.instance", n, jobs)
	}
	if n := openB.RequestCount(submitTopic); n > len(toOpen)+len(byDefault) {
		t.Fatalf("the open instance received %d submit requests for at most %d FluxJobs", n, len(toOpen)+len(byDefault))
	}
}

// managerSAUser is the manager's ServiceAccount as config/default names it,
// which config/policy lets change the marker.
const managerSAUser = "system:serviceaccount:fluxjob-system:fluxjob-controller-manager"

// installMarkerPolicy installs config/policy's ValidatingAdmissionPolicy
// under a name of the test's, bound (as config/policy binds it to every
// FluxJob) to the FluxJobs of namespaces labelled for this test only, and
// waits until the API server enforces it on probe, a FluxJob in ns.
func (h *harness) installMarkerPolicy(ns string, probe *fluxjobv1.FluxJob) {
	h.t.Helper()
	ctx := context.Background()
	var pol admissionv1.ValidatingAdmissionPolicy
	var bind admissionv1.ValidatingAdmissionPolicyBinding
	for file, into := range map[string]any{"submit_attempt_policy.yaml": &pol, "submit_attempt_binding.yaml": &bind} {
		b, err := os.ReadFile(filepath.Join("..", "config", "policy", file))
		if err != nil {
			h.t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, into); err != nil {
			h.t.Fatalf("%s: %v", file, err)
		}
	}
	if !strings.Contains(pol.Spec.Validations[0].Expression, "'"+managerSAUser+"'") {
		h.t.Fatalf("the policy does not name the manager's ServiceAccount %s: %s", managerSAUser, pol.Spec.Validations[0].Expression)
	}
	pol.Name, bind.Name = "fluxjob-"+pol.Name+"-"+h.ns, "fluxjob-"+bind.Name+"-"+h.ns
	bind.Spec.PolicyName = pol.Name
	label := map[string]string{"fluxjob-policy-test": h.ns}
	bind.Spec.MatchResources = &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{MatchLabels: label}}
	var nsObj corev1.Namespace
	if err := h.c.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		h.t.Fatal(err)
	}
	base := nsObj.DeepCopy()
	nsObj.Labels = label
	if err := h.c.Patch(ctx, &nsObj, client.MergeFrom(base)); err != nil {
		h.t.Fatal(err)
	}
	for _, o := range []client.Object{&pol, &bind} {
		if err := h.c.Create(ctx, o); err != nil {
			h.t.Fatalf("installing the policy: %v", err)
		}
		h.t.Cleanup(func() { _ = h.c.Delete(context.Background(), o) })
	}
	// The API server compiles and enforces a new policy after a moment.
	waitUntil(h.t, "the policy to refuse an administrator's change of the marker", func() bool {
		err := setMarker(h.c, probe, "probe-"+time.Now().Format(time.RFC3339Nano))
		return apierrors.IsInvalid(err) || apierrors.IsForbidden(err)
	})
}

// setMarker sets obj's marker annotation to v (a merge patch by c).
func setMarker(c client.Client, obj *fluxjobv1.FluxJob, v string) error {
	var cur fluxjobv1.FluxJob
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), &cur); err != nil {
		return err
	}
	base := cur.DeepCopy()
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	if v == "" {
		delete(cur.Annotations, fluxjobv1.SubmitAttemptAnnotation)
	} else {
		cur.Annotations[fluxjobv1.SubmitAttemptAnnotation] = v
	}
	return c.Patch(context.Background(), &cur, client.MergeFrom(base))
}

// TestEnvtestMarkerPolicy: with config/policy installed, the API server
// refuses a user's change or removal of an existing FluxJob's marker
// (even an administrator's) and allows the manager's ServiceAccount's; a
// FluxJob created with a marker (a copy, a restore) is accepted, and its
// marker gets it past no gate. The manager, running as its ServiceAccount,
// still submits, finishes and deletes FluxJobs (its marker and finalizer
// writes pass the policy).
func TestEnvtestMarkerPolicy(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: time.Second})
	probe := h.create("probe", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Suspend: true})
	h.installMarkerPolicy(h.ns, probe)
	mgrAuth, err := testEnv.AddUser(envtest.User{Name: managerSAUser, Groups: []string{"system:masters"}}, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	mgrCfg := mgrAuth.Config()
	mgrClient, err := client.New(mgrCfg, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}

	// Users: created with one, yes; changed, added or removed later, no.
	var created []forgery
	for _, f := range forgeries {
		if f.atCreate {
			created = append(created, f)
		}
	}
	atCreate := h.createForged(created, h.ns, "created", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: ptrTo(int32(31))}, "default")
	for _, tc := range []struct {
		name, value string
	}{{"garble", "x"}, {"forge", forgedMarker(probe.UID, "default")}, {"remove", ""}} {
		target := probe
		if tc.value == "" {
			target = &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: atCreate[0]}}
		}
		err := setMarker(h.c, target, tc.value)
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			t.Errorf("a user's %s of the marker of %s: %v, want refused by the policy", tc.name, target.Name, err)
		} else if !strings.Contains(err.Error(), "only the fluxjob-operator manager") {
			t.Errorf("refusal %q does not say why", err)
		}
	}
	// Other updates of a FluxJob with a marker pass.
	var cur fluxjobv1.FluxJob
	if err := h.c.Get(context.Background(), client.ObjectKey{Namespace: h.ns, Name: atCreate[0]}, &cur); err != nil {
		t.Fatal(err)
	}
	base := cur.DeepCopy()
	cur.Labels = map[string]string{"edited": "yes"}
	if err := h.c.Patch(context.Background(), &cur, client.MergeFrom(base)); err != nil {
		t.Fatalf("a label edit of a FluxJob with a marker was refused: %v", err)
	}
	// The manager's ServiceAccount may.
	if err := setMarker(mgrClient, probe, forgedMarker(probe.UID, "default")); err != nil {
		t.Fatalf("the manager's change of the marker was refused: %v", err)
	}
	if err := setMarker(mgrClient, probe, ""); err != nil {
		t.Fatalf("the manager's removal of the marker was refused: %v", err)
	}

	// The manager, as its ServiceAccount: the markers created with the
	// FluxJobs grant no privilege; a plain FluxJob runs and is deleted.
	h.cfg = mgrCfg
	h.start()
	for _, name := range atCreate {
		obj := h.waitFor(name, 60*time.Second, "the controller's verdict", settled)
		requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonPrivilegeNotAllowed)
	}
	if n := h.broker.RequestCount(submitTopic); n != 0 {
		t.Fatalf("FluxJobs out of policy reached Flux: %d submit requests", n)
	}
	h.create("plain", cmdSpec("true"))
	obj := h.waitPhase("plain", fluxjobv1.PhaseSucceeded, 60*time.Second)
	if submitAttempt(obj) == nil || !hasFinalizer(obj) {
		t.Fatalf("the manager's marker or finalizer is missing: annotations %v finalizers %v", obj.Annotations, obj.Finalizers)
	}
	if err := h.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("plain", 60*time.Second)
	if n := h.broker.RequestCount(submitTopic); n != 1 {
		t.Fatalf("%d submit requests, want 1 (the plain FluxJob)", n)
	}
}
