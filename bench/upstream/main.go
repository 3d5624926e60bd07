// Command upstream is the app stand-in for the benchmarks: an HTTP server
// on loopback that answers every request with the same ~200-byte JSON
// object, so the benchmarks measure the sidecar and not an app.
//
//	go run ./bench/upstream -addr 127.0.0.1:0 -addr-file /tmp/up.addr
//
// Paths under /stream answer server-sent events instead (see
// serveStream), for the time-to-first-byte measurement.
//
// With -proxy URL it is instead a plain Go reverse proxy to URL (see
// newPlainProxy), the reference the sidecar is compared with.
//
// It refuses to listen anywhere but loopback and stops on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// answer is the fixed reply body: 200 bytes of JSON, close to the
// anchors' upstream in perf-anchors.md.
var answer = []byte(`{"status":"ok","service":"bench-upstream","items":` +
	`["alpha","bravo","charlie","delta","echo","foxtrot","golf","hotel"],` +
	`"count":8,"note":"a fixed answer of about two hundred bytes for the ` +
	`proxy benchmark"}`)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

// run listens, writes the bound address to -addr-file when set, and
// serves until ctx ends.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "loopback address to listen on")
	addrFile := fs.String("addr-file", "", "write the bound address to this file")
	proxyTo := fs.String("proxy", "", "be a plain reverse proxy to this loopback URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkLoopback(*addr); err != nil {
		return err
	}
	var handler http.Handler = http.HandlerFunc(serve)
	if *proxyTo != "" {
		h, err := newPlainProxy(*proxyTo)
		if err != nil {
			return err
		}
		handler = h
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if *addrFile != "" {
		bound := []byte(ln.Addr().String() + "\n")
		if err := os.WriteFile(*addrFile, bound, 0o600); err != nil {
			_ = ln.Close()
			return fmt.Errorf("write addr file: %w", err)
		}
	}

	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// serve drains any request body and answers the fixed JSON, or a stream
// of events for paths under /stream (see serveStream).
func serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/stream") {
		serveStream(w, r)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(answer))}
	_, _ = w.Write(answer)
}

// checkLoopback refuses any listen address whose host is not a loopback
// IP: this server exists for load tests on this machine only.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("addr %q: only a loopback IP is allowed", addr)
	}
	return nil
}
