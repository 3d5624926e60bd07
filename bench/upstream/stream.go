package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Bounds of the stream's query parameters, so that no request can hold
// the server for long.
const (
	maxEvents = 1000
	maxGap    = time.Second
)

// serveStream answers text/event-stream: events (query "events", default
// 3) small "data:" events, each flushed at once, gap (query "gap", a Go
// duration, default 5ms) apart. The first event goes out with the
// headers, so a client's time to its first body byte is the path's
// latency and not the app's.
func serveStream(w http.ResponseWriter, r *http.Request) {
	events, gap, err := streamParams(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-store"}
	rc := http.NewResponseController(w)
	for i := range events {
		if i > 0 {
			t := time.NewTimer(gap)
			select {
			case <-r.Context().Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if _, err := fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// streamParams reads and bounds the events and gap query parameters.
func streamParams(r *http.Request) (int, time.Duration, error) {
	q := r.URL.Query()
	events, gap := 3, 5*time.Millisecond
	if v := q.Get("events"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEvents {
			return 0, 0, fmt.Errorf("events must be in [1, %d]", maxEvents)
		}
		events = n
	}
	if v := q.Get("gap"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxGap {
			return 0, 0, fmt.Errorf("gap must be a duration in [0, %s]", maxGap)
		}
		gap = d
	}
	return events, gap, nil
}
