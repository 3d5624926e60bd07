package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv, when set, makes the test binary a small HTTP server on the
// address it names (the command that TestReady starts).
const helperEnv = "PROBE_HELPER_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		serveHelper(addr)
		return
	}
	os.Exit(m.Run())
}

// serveHelper answers 204 on addr until SIGTERM.
func serveHelper(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		os.Exit(3)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	_ = srv.Close()
}

func TestCheckTarget(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:80/x", true},
		{"http://[::1]:8080/", true},
		{"http://127.0.0.1/", false}, // no port
		{"https://127.0.0.1:443/", false},
		{"http://10.0.0.1:80/", false},
		{"http://localhost:80/", false},
		{"", false},
	}
	for _, tt := range tests {
		if _, err := checkTarget(tt.url); (err == nil) != tt.ok {
			t.Errorf("checkTarget(%q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarize(ds)
	want := summary{P50: 50, P99: 99, Min: 1, Max: 100}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := summarize(nil); got != (summary{}) {
		t.Errorf("got %+v for no samples, want zeros", got)
	}
}

func TestOpenIdleLeavesKeepAliveConnections(t *testing.T) {
	idle := make(chan struct{}, 64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter,
		_ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateIdle {
			idle <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	host := strings.TrimPrefix(srv.URL, "http://")
	req := "GET /x HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	conns, rep := openIdle(t.Context(), host, req, 20, 4)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if rep.Open != 20 || rep.Failed != 0 || len(conns) != 20 {
		t.Fatalf("got %+v and %d connections, want 20 open", rep, len(conns))
	}
	for i := range 20 {
		select {
		case <-idle:
		case <-time.After(10 * time.Second): // a hang guard, not a speed check
			t.Fatalf("only %d of 20 connections idle in the server", i)
		}
	}
}

func TestOpenIdleReportsClosedAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = w.Write([]byte("bye"))
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	conns, rep := openIdle(t.Context(), host, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 3, 3)
	if len(conns) != 0 || rep.Failed != 3 || !strings.Contains(rep.FirstErr, "close true") {
		t.Errorf("got %+v, want 3 failures for answers that close", rep)
	}
}

func TestTTFBReadsWholeStreams(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			_, _ = fmt.Fprintf(w, "data: %d\n\n", i)
			_ = http.NewResponseController(w).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	if err := run(t.Context(), []string{"ttfb", "-url", srv.URL + "/s", "-n", "5"},
		&out); err != nil {
		t.Fatal(err)
	}
	var rep ttfbReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	if rep.Runs != 5 || rep.Bytes != int64(len("data: 0\n\n")*3) || rep.Non2xx != 0 {
		t.Errorf("got %+v, want 5 runs of 27 bytes", rep)
	}
	if rep.First.Max > rep.Whole.Max || rep.First.Min <= 0 {
		t.Errorf("got first byte %+v and whole %+v, want 0 < first <= whole",
			rep.First, rep.Whole)
	}
}

func TestReadyStartsAndStopsTheCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	t.Setenv(helperEnv, addr)

	var out bytes.Buffer
	err = run(t.Context(), []string{"ready", "-url", "http://" + addr + "/", "-n", "2",
		"-settle", "10ms", "--", os.Args[0]}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var rep readyReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	if rep.Runs != 2 || len(rep.RSSKiB) != 2 || rep.Ready.Min <= 0 {
		t.Errorf("got %+v, want 2 timed runs", rep)
	}
	// Each start was stopped: the port is free again.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("port still taken after the runs: %v", err)
	} else {
		_ = ln.Close()
	}
}

func TestReadyFailsWhenTheCommandExits(t *testing.T) {
	err := run(t.Context(), []string{"ready", "-url", "http://127.0.0.1:9/", "-n", "1",
		"-timeout", "20s", "--", "false"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Errorf("got %v, want an exit error", err)
	}
}
