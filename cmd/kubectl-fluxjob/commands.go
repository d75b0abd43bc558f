package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// HeldUrgencyAnnotation keeps a held FluxJob's urgency for release. It
// belongs to the user (the controller's only annotation is its submission
// marker, fluxjob.io/submit-attempt).
const HeldUrgencyAnnotation = "fluxjob.io/held-urgency"

// events prints the Flux job's eventlog: as it is now (job-info.lookup),
// or with -f followed until it ends (after clean).
func (a *app) events(ctx context.Context) error {
	obj, id, err := a.jobOf(ctx, a.opts.follow)
	if err != nil {
		return err
	}
	c, err := a.dialFlux(ctx, obj)
	if err != nil {
		return err
	}
	defer c.Close()
	if id == 0 {
		if id, err = a.indexJob(ctx, c, obj, a.opts.follow); err != nil {
			return err
		}
	}
	if !a.opts.follow {
		var resp struct {
			Eventlog string `json:"eventlog"`
		}
		req := map[string]any{"id": id, "keys": []string{"eventlog"}, "flags": 0}
		if err := c.RPC(ctx, "job-info.lookup", req, &resp); err != nil {
			return fmt.Errorf("reading the eventlog of Flux job %s: %w", id, err)
		}
		evs, err := job.ParseEventlog([]byte(resp.Eventlog))
		if err != nil {
			return fmt.Errorf("eventlog of Flux job %s: %w", id, err)
		}
		for _, ev := range evs {
			printEvent(a.env.stdout, ev)
		}
		return nil
	}
	w, err := job.WatchEvents(ctx, c, id, job.WatchOptions{})
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		printEvent(a.env.stdout, ev)
	}
}

// printEvent writes "TIME NAME CONTEXT" (context as compact JSON).
func printEvent(w io.Writer, ev job.Event) {
	line := eventTime(ev.Timestamp).Format("2006-01-02T15:04:05.000000Z07:00") + " " + ev.Name
	if len(ev.Context) > 0 {
		if b, err := json.Marshal(ev.Context); err == nil {
			line += " " + string(b)
		}
	}
	fmt.Fprintln(w, line)
}

func eventTime(ts float64) time.Time {
	sec := int64(ts)
	return time.Unix(sec, int64((ts-float64(sec))*1e9)).UTC()
}

// describe prints the FluxJob's state, output tail and Kubernetes events.
func (a *app) describe(ctx context.Context) error {
	obj, err := a.getJob(ctx)
	if err != nil {
		return err
	}
	st := &obj.Status
	tw := tabwriter.NewWriter(a.env.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Name", obj.Name)
	row("Namespace", obj.Namespace)
	if len(obj.Spec.Command) > 0 {
		row("Command", strings.Join(obj.Spec.Command, " "))
	}
	row("Phase", string(phaseOf(obj)))
	if st.JobID != 0 {
		row("Flux job", fmt.Sprintf("%s (%d)", st.JobIDF58, st.JobID))
	}
	if st.ExitStatus != nil {
		row("Exit status", strconv.Itoa(int(*st.ExitStatus)))
	}
	if obj.Spec.Urgency != nil {
		row("Urgency", strconv.Itoa(int(*obj.Spec.Urgency)))
	}
	row("Message", st.Message)
	if p := st.Pending; p != nil {
		v := p.Reason + ": " + p.Message
		if p.Since != nil {
			v += " (since " + p.Since.Format(time.RFC3339) + ")"
		}
		row("Waiting", v)
		if p.EstimatedStartTime != nil {
			row("Estimated start", p.EstimatedStartTime.Format(time.RFC3339))
		}
	}
	for _, t := range []struct {
		k string
		v *metav1.Time
	}{{"Submitted", st.SubmitTime}, {"Started", st.StartTime}, {"Completed", st.CompletionTime}} {
		if t.v != nil {
			row(t.k, t.v.Format(time.RFC3339))
		}
	}
	if st.Duration != nil {
		row("Duration", st.Duration.Duration.String())
	}
	if st.Exception != nil {
		row("Exception", fmt.Sprintf("%s: %s", st.Exception.Type, st.Exception.Note))
	}
	tw.Flush()
	if len(st.Conditions) > 0 {
		fmt.Fprintln(a.env.stdout, "Conditions:")
		tw = tabwriter.NewWriter(a.env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tMESSAGE")
		for _, c := range st.Conditions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.Message)
		}
		tw.Flush()
	}
	if o := st.Output; o != nil {
		fmt.Fprintf(a.env.stdout, "Output (the end of it; kubectl fluxjob logs %s prints all):\n", obj.Name)
		printTail(a.env.stdout, "stdout", o.Stdout, o.StdoutBytes)
		printTail(a.env.stdout, "stderr", o.Stderr, o.StderrBytes)
		if o.Message != "" {
			fmt.Fprintf(a.env.stdout, "  note: %s\n", o.Message)
		}
	}
	if len(st.Events) > 0 {
		fmt.Fprintln(a.env.stdout, "Flux events:")
		for _, ev := range st.Events {
			fmt.Fprintf(a.env.stdout, "  %s %s %s\n", ev.Time.UTC().Format("15:04:05.000"), ev.Name, ev.Context)
		}
	}
	return a.printKubeEvents(ctx, obj)
}

func printTail(w io.Writer, stream, text string, total int64) {
	if total == 0 {
		fmt.Fprintf(w, "  %s: (empty)\n", stream)
		return
	}
	fmt.Fprintf(w, "  %s (%d bytes in all):\n", stream, total)
	for _, line := range strings.SplitAfter(strings.TrimSuffix(text, "\n"), "\n") {
		fmt.Fprintf(w, "    %s\n", strings.TrimSuffix(line, "\n"))
	}
}

// printKubeEvents lists the Kubernetes events about the FluxJob.
func (a *app) printKubeEvents(ctx context.Context, obj *fluxjobv1.FluxJob) error {
	var evs corev1.EventList
	if err := a.kube.List(ctx, &evs, client.InNamespace(obj.Namespace), client.MatchingFields{"involvedObject.uid": string(obj.UID)}); err != nil {
		fmt.Fprintf(a.env.stdout, "Events: cannot list them: %v\n", err)
		return nil
	}
	if len(evs.Items) == 0 {
		fmt.Fprintln(a.env.stdout, "Events: <none>")
		return nil
	}
	sort.Slice(evs.Items, func(i, j int) bool { return eventStamp(&evs.Items[i]).Before(eventStamp(&evs.Items[j])) })
	fmt.Fprintln(a.env.stdout, "Events:")
	tw := tabwriter.NewWriter(a.env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tMESSAGE")
	for i := range evs.Items {
		e := &evs.Items[i]
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Type, e.Reason, time.Since(eventStamp(e)).Round(time.Second), e.Message)
	}
	return tw.Flush()
}

func eventStamp(e *corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// cancel cancels the Flux job (the controller then records Cancelled).
func (a *app) cancel(ctx context.Context) error {
	obj, id, err := a.jobOf(ctx, false)
	if err != nil {
		return fmt.Errorf("%w; deleting the FluxJob stops it from being submitted", err)
	}
	if obj.Status.Phase.IsTerminal() {
		return fmt.Errorf("FluxJob %s already ended (%s)", obj.Name, obj.Status.Phase)
	}
	c, err := a.dialFlux(ctx, obj)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := job.Cancel(ctx, c, id, a.opts.message); err != nil {
		return err
	}
	fmt.Fprintf(a.env.stdout, "fluxjob/%s: Flux job %s cancelled\n", obj.Name, id)
	return nil
}

// hold sets spec.urgency to 0 (Flux then never schedules the job) and
// keeps the previous urgency in an annotation for release.
func (a *app) hold(ctx context.Context) error {
	obj, err := a.getJob(ctx)
	if err != nil {
		return err
	}
	if started(obj) {
		return fmt.Errorf("FluxJob %s has already started (phase %s): Flux changes the urgency of pending jobs only", obj.Name, phaseOf(obj))
	}
	cur := fluxjobv1.DefaultUrgency
	if obj.Spec.Urgency != nil {
		cur = *obj.Spec.Urgency
	}
	if cur == 0 {
		fmt.Fprintf(a.env.stdout, "fluxjob/%s is already held (urgency 0)\n", obj.Name)
		return nil
	}
	patch := map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{HeldUrgencyAnnotation: strconv.Itoa(int(cur))}},
		"spec":     map[string]any{"urgency": 0},
	}
	if err := a.mergePatch(ctx, obj, patch); err != nil {
		return err
	}
	fmt.Fprintf(a.env.stdout, "fluxjob/%s held (urgency %d -> 0)\n", obj.Name, cur)
	return nil
}

// release gives a held FluxJob its urgency back (the annotation's, or the
// default 16).
func (a *app) release(ctx context.Context) error {
	obj, err := a.getJob(ctx)
	if err != nil {
		return err
	}
	if obj.Spec.Urgency != nil && *obj.Spec.Urgency != 0 {
		fmt.Fprintf(a.env.stdout, "fluxjob/%s is not held (urgency %d)\n", obj.Name, *obj.Spec.Urgency)
		return nil
	}
	u := int(fluxjobv1.DefaultUrgency)
	if s, ok := obj.Annotations[HeldUrgencyAnnotation]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < int(fluxjobv1.MinUrgency) || n > int(fluxjobv1.MaxUrgency) {
			return fmt.Errorf("annotation %s=%q is not an urgency (0-31)", HeldUrgencyAnnotation, s)
		}
		u = n
	}
	patch := map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{HeldUrgencyAnnotation: nil}},
		"spec":     map[string]any{"urgency": u},
	}
	if err := a.mergePatch(ctx, obj, patch); err != nil {
		return err
	}
	fmt.Fprintf(a.env.stdout, "fluxjob/%s released (urgency 0 -> %d)\n", obj.Name, u)
	return nil
}

// mergePatch applies a JSON merge patch to the FluxJob, failing if it
// changed since it was read (resourceVersion precondition).
func (a *app) mergePatch(ctx context.Context, obj *fluxjobv1.FluxJob, patch map[string]any) error {
	md := patch["metadata"].(map[string]any)
	md["resourceVersion"] = obj.ResourceVersion
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if err := a.kube.Patch(ctx, obj, client.RawPatch(types.MergePatchType, b)); err != nil {
		return fmt.Errorf("patching FluxJob %s: %w", obj.Name, err)
	}
	return nil
}
