package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Accounts: which user a FluxJob's Flux job runs as.
//
// A FluxEndpoint with spec.accounts maps each admitted namespace to an
// account (broker.Registry.RouteFor, by the namespace's labels): the
// route then carries that account's connection to every verb, so the job
// is submitted, followed, cancelled and re-prioritised as that user. No
// field of the FluxJob takes part: the namespace's labels (written by
// whoever administers namespaces), the FluxEndpoint and the Secrets only
// the manager reads decide. An account is a guest of the Flux instance,
// so what flux-core's job-ingest grants the owner only (urgency above
// 16, the waitable flag) is refused here before submission, with the
// broker's own words (job.GuestRefusal, checked against flux-core 0.88 in
// test/realflux TestGuestMunge): reason OwnerOnly, phase Failed, a
// Warning event. A later urgency raise above 16 is refused by Flux itself
// ("guests can only adjust urgency <= default": UrgencyApplied=False).

// routeFor returns obj's route on the instance name: the account its
// namespace maps to, if the instance has accounts (refusal says why the
// namespace has none).
func (r *FluxJobReconciler) routeFor(ctx context.Context, name string, obj *fluxjobv1.FluxJob) (broker.Route, *broker.AccountRefusal, error) {
	if !r.Instances.HasAccounts(name) {
		return r.Instances.Route(name), nil, nil
	}
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, types.NamespacedName{Name: obj.Namespace}, &ns); err != nil {
		return broker.Unroutable(name, "reading the namespace for the FluxEndpoint's accounts: "+err.Error()), nil,
			fmt.Errorf("reading namespace %s for the accounts of FluxEndpoint %s: %w", obj.Namespace, name, err)
	}
	rt, refusal := r.Instances.RouteFor(name, obj.Namespace, labels.Set(ns.Labels))
	return rt, refusal, nil
}

// ownerOnly is the failure of a FluxJob that asks for what the instance
// grants its owner only, routed to an account (a guest), or nil.
func ownerOnly(obj *fluxjobv1.FluxJob, rt broker.Route) *failure {
	if rt.Account == "" {
		return nil
	}
	urgency := specUrgency(obj)
	err := job.GuestRefusal(job.SubmitOptions{Urgency: &urgency, Waitable: obj.Spec.Waitable, Debug: obj.Spec.Debug, Signer: &sign.Munge{}})
	if err == nil {
		return nil
	}
	asked := "spec.waitable"
	if urgency > job.UrgencyDefault {
		asked = fmt.Sprintf("spec.urgency %d", urgency)
	}
	return &failure{Reason: fluxjobv1.ReasonOwnerOnly, Message: fmt.Sprintf(
		"%s is the Flux instance owner's only: namespace %q submits as account %q of FluxEndpoint %q, a guest of the instance, which flux-core refuses (%v)",
		asked, obj.Namespace, rt.Account, rt.Name, err)}
}
