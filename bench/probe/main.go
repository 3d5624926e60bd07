// Command probe takes the benchmarks' footprint and latency measurements
// that a load generator does not: start-up time and memory, memory with
// many idle keep-alive connections, and the time to the first byte of a
// streamed answer.
//
//	probe ready -url http://127.0.0.1:PORT/health [-n 5] -- CMD ARGS...
//	probe idle -url http://127.0.0.1:PORT/x [-n 10000] [-hold 60s]
//	probe ttfb -url http://127.0.0.1:PORT/stream [-n 100]
//
// ready starts CMD n times, each time measuring the time from the start
// to the first 2xx answer from -url and the process's resident memory a
// moment later, then stops it with SIGTERM. idle opens n connections,
// sends one request on each and keeps them open and idle, prints a line
// once all are open and holds them until -hold passes or it is stopped.
// ttfb sends n GETs one after another and times the first byte and the
// end of each answer's body. Each prints one JSON object a line.
//
// It only talks to loopback addresses.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

// run dispatches to the subcommand named by args[0].
func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: probe ready|idle|ttfb [flags]")
	}
	switch args[0] {
	case "ready":
		return runReady(ctx, args[1:], stdout)
	case "idle":
		return runIdle(ctx, args[1:], stdout)
	case "ttfb":
		return runTTFB(ctx, args[1:], stdout)
	}
	return fmt.Errorf("unknown subcommand %q: want ready, idle or ttfb", args[0])
}

// checkTarget accepts only http URLs whose host is a loopback IP: this
// tool measures servers on this machine.
func checkTarget(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("-url is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("-url: scheme must be http, got %q", u.Scheme)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("-url: host %q is not a loopback IP", u.Hostname())
	}
	if u.Port() == "" {
		return nil, errors.New("-url: a port is required")
	}
	return u, nil
}

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// summary is the spread of a series of durations in milliseconds.
type summary struct {
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Min float64 `json:"min_ms"`
	Max float64 `json:"max_ms"`
}

// summarize returns the spread of ds (nearest-rank percentiles); zero
// for none.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return summary{
		P50: ms(rank(0.50)),
		P99: ms(rank(0.99)),
		Min: ms(s[0]),
		Max: ms(s[len(s)-1]),
	}
}

// ms converts d to milliseconds with microsecond resolution.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
