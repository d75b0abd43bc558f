// Package realflux checks the production Flux client (fluxbridge/flux,
// fluxbridge/job and the fluxbridge Executor) against a real flux-core
// broker, and measures it side by side with flux-core's own clients.
//
// Everything here is in tests and benchmarks that run only when a `flux`
// command (flux-core 0.88) is on PATH; elsewhere they skip with a message.
// Each starts its own `flux start --test-size=1` instance, or uses $FLUX_URI
// when run inside one (`flux start --test-size=1 go test ./test/realflux/`).
//
//	go test -v ./test/realflux/
//	go test -run '^$' -bench . -benchmem -count 1 -benchtime 1x -timeout 60m ./test/realflux/
//
// The tests also run the same requests against fluxbridge/testbroker and
// compare the shape of the answers (keys, types, errno, message), so that a
// difference between the test double and the real broker shows up as a
// failing test.
package realflux
