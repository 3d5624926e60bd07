package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// worker is one sender's tally; workers share nothing while running.
type worker struct {
	latencies []time.Duration // of requests that got an answer
	errors    int64
	non2xx    int64
	statuses  map[int]int64
	firstErr  error
}

// generate runs o.conns workers until o.duration passed or o.count
// requests were started, waits for the requests in flight, and returns
// the merged tally.
func generate(ctx context.Context, o *options) (*result, error) {
	client := newClient(o)
	defer client.CloseIdleConnections()

	runID := newRunID()
	var seq atomic.Int64
	stop, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	hard, cancelHard := context.WithTimeout(ctx, o.duration+o.timeout)
	defer cancelHard()

	workers := make([]*worker, o.conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workers {
		w := &worker{statuses: make(map[int]int64)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(stop, hard, client, o, runID, &seq)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	return merge(o, workers, elapsed), nil
}

// newClient returns a client that keeps one idle connection per worker,
// never uses a proxy from the environment and never follows redirects
// (a redirect counts as a non-2xx answer).
func newClient(o *options) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConns:        o.conns,
		MaxIdleConnsPerHost: o.conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// loop sends requests until stop ends or the shared counter passes
// o.count. Requests run under hard, which ends o.timeout after stop, so a
// request in flight at the end completes and is counted, and none can
// outlive hard. (One shared deadline instead of a timer per request keeps
// the generator's own cost down.)
func (w *worker) loop(stop, hard context.Context, c *http.Client, o *options,
	runID string, seq *atomic.Int64) {
	for stop.Err() == nil {
		n := seq.Add(1)
		if o.count > 0 && n > o.count {
			return
		}
		t0 := time.Now()
		status, err := send(hard, c, o, runID, n)
		d := time.Since(t0)
		if err != nil {
			w.errors++
			if w.firstErr == nil {
				w.firstErr = err
			}
			continue
		}
		w.latencies = append(w.latencies, d)
		w.statuses[status]++
		if status < 200 || status > 299 {
			w.non2xx++
		}
	}
}

// send does request number n under ctx and drains its answer. It returns the
// status, or an error when no complete answer arrived.
func send(ctx context.Context, c *http.Client, o *options, runID string,
	n int64) (int, error) {
	var body io.Reader
	if !o.body.empty() {
		body = bytes.NewReader(o.body.render(n))
	}
	req, err := http.NewRequestWithContext(ctx, o.method, o.url, body)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	for k, v := range o.header {
		req.Header[k] = v
	}
	if o.host != "" {
		req.Host = o.host
	}
	if o.idempotency {
		req.Header["Idempotency-Key"] = []string{runID + "-" + strconv.FormatInt(n, 10)}
	}

	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, nil
}
