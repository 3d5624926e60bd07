package status

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"
)

// Window sizes of Stats: the last hour in one-minute buckets.
const (
	bucketWidth = time.Minute
	numBuckets  = 60
	// Window is the span Stats reports on.
	Window = numBuckets * bucketWidth
)

// MaxEndpoints bounds how many endpoint labels Stats keeps apart. Labels
// past the bound are counted together under OverflowEndpoint (one more
// label), so a caller that leaks unbounded labels costs memory only up to
// the bound: about 11 KiB a label.
const MaxEndpoints = 64

// Labels Stats substitutes for ones it does not keep.
const (
	// OverflowEndpoint collects every label past MaxEndpoints.
	OverflowEndpoint = "(other)"
	// UnlabelledEndpoint is used for requests no handler labelled.
	UnlabelledEndpoint = "(unlabelled)"
)

// zimmerEndpoints are the labels the zimmer package sets, in the order
// the page lists them. The values match zimmer.Endpoint; they are
// repeated here so this package does not depend on the endpoints.
var zimmerEndpoints = []string{
	"health", "provision", "usage/consume", "kb/status", "kb/reset",
}

// Successful is the rule behind the success rate, applied to each
// request's endpoint label and final status:
//
//   - health and provision: exactly 200, the only status the platform
//     accepts from them;
//   - usage/consume, kb/status and kb/reset: any 2xx, as the platform
//     reads them;
//   - every other label (proxied routes, passthrough): any status below
//     500. There a 4xx is the app's answer to a client's mistake and
//     says nothing about the service.
//
// On Zimmer endpoints every 4xx counts as a failure, 401 included: the
// platform's admin report counts it so, and a stale service token is a
// failure operators must see. The price is that strangers probing those
// paths without a token lower the rate as well; the 4xx count shown
// beside the rate tells the two apart.
func Successful(endpoint string, status int) bool {
	switch endpoint {
	case "health", "provision":
		return status == 200
	case "usage/consume", "kb/status", "kb/reset":
		return status >= 200 && status < 300
	default:
		return status < 500
	}
}

// histBounds are the upper bounds of the latency histogram's bins; the
// last bin is unbounded. Quantiles are interpolated inside a bin, so an
// estimate is off by at most the bin's width.
var histBounds = [...]time.Duration{
	1 * time.Millisecond,
	2500 * time.Microsecond,
	5 * time.Millisecond,
	10 * time.Millisecond,
	25 * time.Millisecond,
	50 * time.Millisecond,
	100 * time.Millisecond,
	250 * time.Millisecond,
	500 * time.Millisecond,
	1 * time.Second,
	2500 * time.Millisecond,
	5 * time.Second,
	10 * time.Second,
	30 * time.Second,
	60 * time.Second,
}

const numBins = len(histBounds) + 1

// bucket holds one minute of one endpoint.
type bucket struct {
	minute   int64 // Unix minute held; a bucket of another minute is stale
	requests uint64
	success  uint64
	client   uint64 // 4xx
	server   uint64 // 5xx
	sum      time.Duration
	min, max time.Duration
	hist     [numBins]uint64
}

// series is the ring of buckets of one endpoint; mu guards buckets.
type series struct {
	mu      sync.Mutex
	buckets [numBuckets]bucket
}

// Stats keeps, per endpoint label, the requests, outcomes and latencies of
// the last hour in one-minute buckets. Memory is fixed per label and the
// labels are bounded by MaxEndpoints; Observe does not allocate once a
// label is known. All methods are safe for concurrent use.
type Stats struct {
	now func() time.Time

	mu     sync.RWMutex // guards series (the map, not its values)
	series map[string]*series
}

// NewStats returns empty Stats reading the clock now (nil: time.Now).
func NewStats(now func() time.Time) *Stats {
	if now == nil {
		now = time.Now
	}
	return &Stats{now: now, series: make(map[string]*series)}
}

// Observe records one request: its endpoint label, final status and
// duration. Its signature matches the observe hook of logging.Access.
// An empty label is recorded as UnlabelledEndpoint, a negative duration
// as zero.
func (s *Stats) Observe(endpoint string, status int, d time.Duration) {
	minute := unixMinute(s.now()) // read outside any lock: caller's code
	if d < 0 {
		d = 0
	}
	ok := Successful(endpoint, status)
	bin := binOf(d)
	ser := s.seriesFor(endpoint)

	ser.mu.Lock()
	defer ser.mu.Unlock()
	b := &ser.buckets[slot(minute)]
	switch {
	case b.minute > minute:
		// The slot moved on to a later minute while this request read
		// the clock an hour ago or more: it is outside the window.
		return
	case b.minute < minute:
		*b = bucket{minute: minute}
	}
	if b.requests == 0 || d < b.min {
		b.min = d
	}
	b.requests++
	if ok {
		b.success++
	}
	switch {
	case status >= 500:
		b.server++
	case status >= 400:
		b.client++
	}
	b.sum = addSat(b.sum, d)
	b.max = max(b.max, d)
	b.hist[bin]++
}

// seriesFor returns the series of label, creating it when there is room.
func (s *Stats) seriesFor(label string) *series {
	if label == "" {
		label = UnlabelledEndpoint
	}
	s.mu.RLock()
	ser := s.series[label]
	s.mu.RUnlock()
	if ser != nil {
		return ser
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if ser = s.series[label]; ser != nil {
		return ser
	}
	if len(s.series) >= MaxEndpoints {
		label = OverflowEndpoint
		if ser = s.series[label]; ser != nil {
			return ser
		}
	}
	ser = new(series)
	s.series[label] = ser
	return ser
}

// EndpointStats sums one endpoint's last hour.
type EndpointStats struct {
	Endpoint string
	// Requests counts every request; Successes those Successful accepts.
	Requests  uint64
	Successes uint64
	// ClientErrors and ServerErrors count 4xx and 5xx answers.
	ClientErrors uint64
	ServerErrors uint64
	// P50 and P99 are estimated from a histogram (exact to its bins and
	// never outside [Min, Max]); Min, Mean and Max are exact. All zero
	// without requests.
	P50, P99, Min, Mean, Max time.Duration
}

// SuccessRate is Successes/Requests in [0, 1], and 0 without requests.
func (e EndpointStats) SuccessRate() float64 {
	if e.Requests == 0 {
		return 0
	}
	return float64(e.Successes) / float64(e.Requests)
}

// Endpoints returns every endpoint label seen so far with its last hour
// (the current minute and the 59 before it), Zimmer endpoints first in a
// fixed order, then the others by name. A label with no request in the
// window is kept with zero counts.
func (s *Stats) Endpoints() []EndpointStats {
	minute := unixMinute(s.now())
	s.mu.RLock()
	labels := make([]string, 0, len(s.series))
	list := make(map[string]*series, len(s.series))
	for k, v := range s.series {
		labels = append(labels, k)
		list[k] = v
	}
	s.mu.RUnlock()

	slices.SortFunc(labels, compareLabels)
	out := make([]EndpointStats, len(labels))
	for i, l := range labels {
		out[i] = list[l].sum(minute)
		out[i].Endpoint = l
	}
	return out
}

// compareLabels orders Zimmer endpoints first, then by name.
func compareLabels(a, b string) int {
	ia, ib := slices.Index(zimmerEndpoints, a), slices.Index(zimmerEndpoints, b)
	switch {
	case ia >= 0 && ib >= 0:
		return cmp.Compare(ia, ib)
	case ia >= 0:
		return -1
	case ib >= 0:
		return 1
	}
	return cmp.Compare(a, b)
}

// sum adds up the buckets inside the window that ends at minute.
func (ser *series) sum(minute int64) EndpointStats {
	var e EndpointStats
	var hist [numBins]uint64
	var total time.Duration
	ser.mu.Lock()
	for i := range ser.buckets {
		b := &ser.buckets[i]
		if b.requests == 0 || b.minute > minute || b.minute <= minute-numBuckets {
			continue
		}
		if e.Requests == 0 || b.min < e.Min {
			e.Min = b.min
		}
		e.Requests += b.requests
		e.Successes += b.success
		e.ClientErrors += b.client
		e.ServerErrors += b.server
		total = addSat(total, b.sum)
		e.Max = max(e.Max, b.max)
		for j, n := range b.hist {
			hist[j] += n
		}
	}
	ser.mu.Unlock()

	if e.Requests > 0 {
		// A saturated sum makes the mean an underestimate; keep it in
		// range regardless.
		e.Mean = min(max(total/time.Duration(e.Requests), e.Min), e.Max)
		e.P50 = quantile(&hist, e.Requests, e.Min, e.Max, 0.50)
		e.P99 = quantile(&hist, e.Requests, e.Min, e.Max, 0.99)
	}
	return e
}

// quantile estimates the q-quantile of n durations binned in hist, the
// smallest minD and the largest maxD, interpolating linearly inside the
// bin that holds it.
func quantile(
	hist *[numBins]uint64, n uint64, minD, maxD time.Duration, q float64,
) time.Duration {
	rank := q * float64(n)
	var seen uint64
	for i, c := range hist {
		if c == 0 || float64(seen+c) < rank {
			seen += c
			continue
		}
		lo, hi := binRange(i, maxD)
		frac := (rank - float64(seen)) / float64(c)
		est := lo + time.Duration(frac*float64(hi-lo))
		return min(max(est, minD), maxD)
	}
	return maxD
}

// addSat adds two non-negative durations, saturating instead of
// overflowing (a sum of day-long streams could otherwise wrap).
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// binRange returns the bounds of bin i; the last bin ends at maxD.
func binRange(i int, maxD time.Duration) (lo, hi time.Duration) {
	if i > 0 {
		lo = histBounds[i-1]
	}
	if i < len(histBounds) {
		return lo, histBounds[i]
	}
	return lo, max(lo, maxD)
}

// binOf returns the histogram bin of d.
func binOf(d time.Duration) int {
	for i, b := range histBounds {
		if d <= b {
			return i
		}
	}
	return len(histBounds)
}

// unixMinute is t's minute since the Unix epoch, rounded down.
func unixMinute(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s < 0 && s%60 != 0 {
		m--
	}
	return m
}

// slot is the ring index of a minute.
func slot(minute int64) int {
	i := minute % numBuckets
	if i < 0 {
		i += numBuckets
	}
	return int(i)
}
