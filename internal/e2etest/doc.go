// Package e2etest runs the real zimmer-sidecar binary and the example apps
// as separate processes for end-to-end tests, and plays the Zimmer
// platform against them.
//
// It builds the binary once per test process (with the race detector when
// the tests themselves run with it), starts processes in their own process
// groups, captures their output, waits for their readiness lines and kills
// every group in t.Cleanup, printing the captured output when the test
// failed. It sends traffic only to loopback addresses it was given.
//
// It is a test helper: it calls t.Fatal and t.Skip, and it is never linked
// into the product.
package e2etest
