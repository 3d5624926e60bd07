// Command load is the benchmarks' load generator: c workers send requests
// to one loopback URL over reused keep-alive connections for a bounded
// time (and optionally a bounded count), then it prints throughput,
// latency percentiles, transport errors and non-2xx answers.
//
//	go run ./bench/load -url http://127.0.0.1:8080/x -c 64 -d 10s
//	go run ./bench/load -url http://127.0.0.1:8080/usage/consume \
//	    -method POST -header 'X-Zimmer-Service-Token: ...' -idempotency \
//	    -body '{"user_automation_id":{seq%4},"units":1,"usage_type":"bench"}'
//
// In -body, {seq} becomes the request's sequence number (1, 2, ...) and
// {seq%N} becomes 1 + seq mod N, to spread requests over N accounts.
// -idempotency sends a unique Idempotency-Key per request.
//
// It only sends traffic to loopback addresses and always stops: after -d,
// or earlier after -n requests. Requests in flight when -d ends may run
// -timeout longer and are counted; any still running then is cut off.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxDuration bounds -d so that a typo cannot start an endless run.
const maxDuration = time.Hour

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// options are the parsed command line.
type options struct {
	url         string
	method      string
	body        *template
	header      http.Header
	host        string
	conns       int
	duration    time.Duration
	count       int64
	timeout     time.Duration
	idempotency bool
	json        bool
}

// run parses args, runs the load and prints the report. It fails when
// the arguments are wrong or when not a single request got a 2xx answer.
func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	res, err := generate(context.Background(), o)
	if err != nil {
		return err
	}
	if o.json {
		err = res.writeJSON(stdout)
	} else {
		err = res.writeText(stdout)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if res.Requests > 0 && res.Requests == res.Errors+res.Non2xx {
		return errors.New("no request got a 2xx answer")
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o       options
		headers headerList
		body    string
	)
	fs.StringVar(&o.url, "url", "", "target URL (loopback only)")
	fs.StringVar(&o.method, "method", http.MethodGet, "HTTP method")
	fs.StringVar(&body, "body", "", "request body; {seq} and {seq%N} are replaced")
	fs.Var(&headers, "header", "request header 'Name: value' (repeatable)")
	fs.IntVar(&o.conns, "c", 64, "concurrent workers, each with its own connection")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "how long to send requests")
	fs.Int64Var(&o.count, "n", 0, "stop after this many requests (0: only -d bounds)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second,
		"how long requests in flight may run past -d")
	fs.BoolVar(&o.idempotency, "idempotency", false, "a unique Idempotency-Key per request")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	if err := checkTarget(o.url); err != nil {
		return nil, err
	}
	switch {
	case o.conns < 1 || o.conns > 10_000:
		return nil, fmt.Errorf("-c must be in [1, 10000], got %d", o.conns)
	case o.duration <= 0 || o.duration > maxDuration:
		return nil, fmt.Errorf("-d must be in (0, %s], got %s", maxDuration, o.duration)
	case o.count < 0:
		return nil, fmt.Errorf("-n must not be negative, got %d", o.count)
	case o.timeout <= 0:
		return nil, fmt.Errorf("-timeout must be positive, got %s", o.timeout)
	}

	h, host, err := headers.header()
	if err != nil {
		return nil, err
	}
	if body != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	o.header, o.host = h, host
	if o.body, err = parseTemplate(body); err != nil {
		return nil, fmt.Errorf("-body: %w", err)
	}
	return &o, nil
}

// checkTarget accepts only http(s) URLs whose host is a loopback IP or
// "localhost": this tool is for load tests on this machine.
func checkTarget(raw string) error {
	if raw == "" {
		return errors.New("-url is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("-url: scheme must be http or https, got %q", u.Scheme)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-url: host %q is not a loopback address", host)
	}
	return nil
}

// headerList collects repeated -header flags.
type headerList []string

func (l *headerList) String() string { return strings.Join(*l, ", ") }

func (l *headerList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// header parses the collected flags; a Host header is returned apart,
// since net/http takes it from Request.Host.
func (l headerList) header() (http.Header, string, error) {
	h := make(http.Header)
	var host string
	for _, line := range l {
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, "", fmt.Errorf("-header %q: want 'Name: value'", line)
		}
		value = strings.TrimSpace(value)
		if http.CanonicalHeaderKey(name) == "Host" {
			host = value
			continue
		}
		h.Add(name, value)
	}
	return h, host, nil
}

// newRunID returns a random prefix for idempotency keys, so that two
// runs against the same ledger never replay each other's keys.
func newRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
