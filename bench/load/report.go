package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// result is the report of one run. Latencies are in milliseconds and
// cover the requests that got an answer (any status).
type result struct {
	URL         string           `json:"url"`
	Method      string           `json:"method"`
	Conns       int              `json:"connections"`
	Requests    int64            `json:"requests"`
	Errors      int64            `json:"errors"`
	Non2xx      int64            `json:"non_2xx"`
	Statuses    map[string]int64 `json:"statuses"`
	ElapsedSec  float64          `json:"elapsed_s"`
	RPS         float64          `json:"requests_per_s"`
	P50ms       float64          `json:"p50_ms"`
	P90ms       float64          `json:"p90_ms"`
	P99ms       float64          `json:"p99_ms"`
	MaxMs       float64          `json:"max_ms"`
	FirstError  string           `json:"first_error,omitempty"`
	elapsed     time.Duration
	statusOrder []int
}

// merge adds up the workers' tallies. Requests counts every request that
// was sent, answered or not; RPS is Requests over the wall time.
func merge(o *options, workers []*worker, elapsed time.Duration) *result {
	r := &result{
		URL:        o.url,
		Method:     o.method,
		Conns:      o.conns,
		Statuses:   make(map[string]int64),
		ElapsedSec: elapsed.Seconds(),
		elapsed:    elapsed,
	}
	total := 0
	for _, w := range workers {
		total += len(w.latencies)
	}
	all := make([]time.Duration, 0, total)
	counts := make(map[int]int64)
	for _, w := range workers {
		all = append(all, w.latencies...)
		r.Errors += w.errors
		r.Non2xx += w.non2xx
		for s, n := range w.statuses {
			counts[s] += n
		}
		if r.FirstError == "" && w.firstErr != nil {
			r.FirstError = w.firstErr.Error()
		}
	}
	r.Requests = int64(len(all)) + r.Errors
	if elapsed > 0 {
		r.RPS = float64(r.Requests) / elapsed.Seconds()
	}
	for s, n := range counts {
		r.Statuses[fmt.Sprint(s)] = n
		r.statusOrder = append(r.statusOrder, s)
	}
	sort.Ints(r.statusOrder)

	slices.Sort(all)
	r.P50ms = ms(percentile(all, 50))
	r.P90ms = ms(percentile(all, 90))
	r.P99ms = ms(percentile(all, 99))
	if len(all) > 0 {
		r.MaxMs = ms(all[len(all)-1])
	}
	return r
}

// percentile returns the nearest-rank p-th percentile of sorted, or 0
// when it is empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (len(sorted)*p + 99) / 100 // ceil(n*p/100)
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *result) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	return enc.Encode(r)
}

func (r *result) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "target    %s %s\n", r.Method, r.URL)
	fmt.Fprintf(&b, "load      %d connections for %s\n", r.Conns,
		r.elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "requests  %d = %.1f req/s\n", r.Requests, r.RPS)
	fmt.Fprintf(&b, "latency   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms\n",
		r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	statuses := make([]string, 0, len(r.statusOrder))
	for _, s := range r.statusOrder {
		statuses = append(statuses, fmt.Sprintf("%d: %d", s, r.Statuses[fmt.Sprint(s)]))
	}
	fmt.Fprintf(&b, "statuses  %s\n", strings.Join(statuses, ", "))
	fmt.Fprintf(&b, "errors    %d transport, %d non-2xx\n", r.Errors, r.Non2xx)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first     %s\n", r.FirstError)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
