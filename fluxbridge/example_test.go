package fluxbridge_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// broker starts a test broker standing in for a Flux instance; a real
// program leaves ExecutorOptions.URI empty ($FLUX_URI) or names its
// instance's local:// socket.
func broker() *testbroker.Server {
	srv := testbroker.New(testbroker.Options{TimeScale: 0.001})
	if err := srv.Start(context.Background()); err != nil {
		panic(err)
	}
	return srv
}

func ExampleExecutor_Submit() {
	srv := broker()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{URI: srv.URI(), Workers: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ex.Shutdown(true, false)

	for _, cmd := range [][]string{{"true"}, {"false"}, {"exit", "3"}, {"/not/a/real/app"}} {
		js, err := job.FromCommand(cmd, job.CommandOptions{})
		if err != nil {
			fmt.Println(err)
			return
		}
		f, err := ex.Submit(ctx, js, job.SubmitOptions{Urgency: job.Urgency(job.UrgencyDefault)})
		if err != nil {
			fmt.Println(err)
			return
		}
		status, err := f.Result(ctx)
		var je *fluxbridge.JobException
		switch {
		case errors.As(err, &je):
			fmt.Printf("%v: job exception type=%s severity=%d\n", cmd, je.Type, je.Severity)
		case err != nil:
			fmt.Println(err)
		default:
			fmt.Printf("%v: exit status %d\n", cmd, status)
		}
	}
	// Output:
	// [true]: exit status 0
	// [false]: exit status 1
	// [exit 3]: exit status 3
	// [/not/a/real/app]: job exception type=exec severity=0
}

func ExampleExecutor_Attach() {
	srv := broker()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{URI: srv.URI()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ex.Shutdown(true, false)

	js, _ := job.FromCommand([]string{"exit", "7"}, job.CommandOptions{})
	submitted, err := ex.Submit(ctx, js, job.SubmitOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	id, err := submitted.JobID(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	// later, e.g. after a restart: follow the same job by its ID
	attached, err := ex.Attach(ctx, id)
	if err != nil {
		fmt.Println(err)
		return
	}
	status, err := attached.Result(ctx)
	fmt.Println("attached result:", status, err)

	unknown, _ := ex.Attach(ctx, 12345)
	_, err = unknown.Result(ctx)
	fmt.Println("unknown job:", errors.Is(err, fluxbridge.ErrNoSuchJob))
	// Output:
	// attached result: 7 <nil>
	// unknown job: true
}

func ExampleFuture_AddEventCallback() {
	srv := broker()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{URI: srv.URI()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ex.Shutdown(true, false)

	js, _ := job.FromCommand([]string{"sleep", "10"}, job.CommandOptions{})
	f, err := ex.Submit(ctx, js, job.SubmitOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var mu sync.Mutex
	var seen []string
	clean := make(chan struct{})
	for _, name := range []string{"submit", "alloc", "start", "finish", "clean"} {
		// events that already happened are replayed to a new callback
		err := f.AddEventCallback(name, func(_ *fluxbridge.Future, ev job.Event) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, ev.Name)
			if ev.Name == "finish" {
				seen = append(seen, fmt.Sprintf("(status %v)", ev.Context["status"]))
			}
			if ev.Name == "clean" {
				close(clean)
			}
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(f.AddEventCallback("no-such-event", func(*fluxbridge.Future, job.Event) {}))
	<-clean // clean comes after the future is done: callbacks outlive it
	mu.Lock()
	fmt.Println(strings.Join(seen, " "))
	mu.Unlock()
	// Output:
	// fluxbridge: unknown event name: "no-such-event"
	// submit alloc start finish (status 0) clean
}

func ExampleExecutor_Shutdown() {
	srv := broker()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{URI: srv.URI()})
	if err != nil {
		fmt.Println(err)
		return
	}
	js, _ := job.FromCommand([]string{"sleep", "20"}, job.CommandOptions{})
	f, err := ex.Submit(ctx, js, job.SubmitOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	f.AddDoneCallback(func(f *fluxbridge.Future) { fmt.Println("done callback, cancelled:", f.Cancelled()) })
	if _, err := f.JobID(ctx); err != nil { // submitted: the future is running
		fmt.Println(err)
		return
	}

	// wait for running futures to finish; cancel the ones not started
	ex.Shutdown(true, true)
	ex.Shutdown(true, true) // safe to call again
	fmt.Println("done after shutdown:", f.Done())
	_, err = ex.Submit(ctx, js, job.SubmitOptions{})
	fmt.Println(errors.Is(err, fluxbridge.ErrShutdown))
	// Output:
	// done callback, cancelled: false
	// done after shutdown: true
	// true
}
