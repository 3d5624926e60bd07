package status

import (
	"sync"
	"testing"
	"time"
	"unsafe"
)

// find returns the stats of label, failing when it is absent.
func find(t *testing.T, s *Stats, label string) EndpointStats {
	t.Helper()
	for _, e := range s.Endpoints() {
		if e.Endpoint == label {
			return e
		}
	}
	t.Fatalf("endpoint %q not in %+v", label, s.Endpoints())
	return EndpointStats{}
}

func TestSuccessful(t *testing.T) {
	t.Parallel()
	tests := []struct {
		endpoint string
		status   int
		want     bool
	}{
		{"health", 200, true},
		{"health", 204, false},
		{"health", 503, false},
		{"provision", 200, true},
		{"provision", 201, false},
		{"provision", 401, false},
		{"usage/consume", 200, true},
		{"usage/consume", 409, false},
		{"kb/status", 204, true},
		{"kb/status", 404, false},
		{"kb/reset", 200, true},
		{"kb/reset", 500, false},
		{"proxy", 200, true},
		{"proxy", 101, true},
		{"proxy", 404, true},
		{"proxy", 499, true},
		{"proxy", 500, false},
		{"route:/chat/*", 402, true},
		{"route:/chat/*", 502, false},
		{"", 503, false},
	}
	for _, tt := range tests {
		if got := Successful(tt.endpoint, tt.status); got != tt.want {
			t.Errorf("Successful(%q, %d): got %v, want %v",
				tt.endpoint, tt.status, got, tt.want)
		}
	}
}

func TestStatsCounts(t *testing.T) {
	t.Parallel()
	c := &clock{t: t0}
	s := NewStats(c.now)
	s.Observe("provision", 200, 10*time.Millisecond)
	s.Observe("provision", 401, time.Millisecond)
	s.Observe("provision", 502, 30*time.Millisecond)
	s.Observe("provision", 200, -time.Second) // counted as zero

	got := find(t, s, "provision")
	want := EndpointStats{
		Endpoint: "provision", Requests: 4, Successes: 2,
		ClientErrors: 1, ServerErrors: 1,
		Min: 0, Max: 30 * time.Millisecond, Mean: 41 * time.Millisecond / 4,
	}
	got.P50, got.P99 = 0, 0 // checked in TestStatsQuantiles
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if r := got.SuccessRate(); r != 0.5 {
		t.Errorf("got success rate %v, want 0.5", r)
	}
	if r := (EndpointStats{}).SuccessRate(); r != 0 {
		t.Errorf("got success rate %v without requests, want 0", r)
	}
}

func TestStatsWindowRollover(t *testing.T) {
	t.Parallel()
	c := &clock{t: t0.Add(30 * time.Second)}
	s := NewStats(c.now)

	// One request in each of minutes 0, 30 and 59 of the hour.
	s.Observe("proxy", 200, time.Millisecond)
	c.advance(30 * time.Minute)
	s.Observe("proxy", 500, time.Millisecond)
	c.advance(29 * time.Minute)
	s.Observe("proxy", 200, time.Millisecond)

	steps := []struct {
		name    string
		advance time.Duration
		want    uint64 // requests in the window
		wantErr uint64 // 5xx in the window
	}{
		{"all three in the hour", 0, 3, 1},
		{"end of minute 59", 29 * time.Second, 3, 1},
		{"minute 0 left the window", time.Second, 2, 1},
		{"minute 30 left the window", 30 * time.Minute, 1, 0},
		{"all gone", 30 * time.Minute, 0, 0},
		{"long idle", 48 * time.Hour, 0, 0},
	}
	for _, st := range steps {
		c.advance(st.advance)
		got := find(t, s, "proxy")
		if got.Requests != st.want || got.ServerErrors != st.wantErr {
			t.Errorf("%s: got %d requests, %d 5xx; want %d, %d",
				st.name, got.Requests, got.ServerErrors, st.want, st.wantErr)
		}
	}

	// A slot is reused for a new minute: the old minute's counts are gone.
	s.Observe("proxy", 200, 5*time.Millisecond)
	if got := find(t, s, "proxy"); got.Requests != 1 || got.Max != 5*time.Millisecond {
		t.Errorf("after reuse: got %+v, want 1 request of 5ms", got)
	}
}

// A request that read the clock before its slot moved on to a later
// minute (an hour later) is outside the window and dropped.
func TestStatsLateObservationDropped(t *testing.T) {
	t.Parallel()
	c := &clock{t: t0.Add(time.Hour)}
	s := NewStats(c.now)
	s.Observe("proxy", 200, time.Millisecond)

	c.t = t0 // same slot, an hour earlier
	s.Observe("proxy", 500, time.Millisecond)

	c.t = t0.Add(time.Hour)
	if got := find(t, s, "proxy"); got.Requests != 1 || got.ServerErrors != 0 {
		t.Errorf("got %+v, want only the first request", got)
	}
}

func TestStatsQuantiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		obs              map[time.Duration]int
		p50Lo, p50Hi     time.Duration
		p99Lo, p99Hi     time.Duration
		wantMin, wantMax time.Duration
	}{
		{
			name:  "one value is exact",
			obs:   map[time.Duration]int{40 * time.Millisecond: 100},
			p50Lo: 40 * time.Millisecond, p50Hi: 40 * time.Millisecond,
			p99Lo: 40 * time.Millisecond, p99Hi: 40 * time.Millisecond,
			wantMin: 40 * time.Millisecond, wantMax: 40 * time.Millisecond,
		},
		{
			name: "a slow tail",
			obs: map[time.Duration]int{
				3 * time.Millisecond: 980, 2 * time.Second: 20,
			},
			p50Lo: 2500 * time.Microsecond, p50Hi: 5 * time.Millisecond,
			p99Lo: time.Second, p99Hi: 2 * time.Second,
			wantMin: 3 * time.Millisecond, wantMax: 2 * time.Second,
		},
		{
			name: "past the last bound",
			obs: map[time.Duration]int{
				2 * time.Minute: 10, 10 * time.Minute: 10,
			},
			p50Lo: time.Minute, p50Hi: 10 * time.Minute,
			p99Lo: 2 * time.Minute, p99Hi: 10 * time.Minute,
			wantMin: 2 * time.Minute, wantMax: 10 * time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStats(func() time.Time { return t0 })
			for d, n := range tt.obs {
				for range n {
					s.Observe("proxy", 200, d)
				}
			}
			got := find(t, s, "proxy")
			if got.P50 < tt.p50Lo || got.P50 > tt.p50Hi {
				t.Errorf("got p50 %v, want in [%v, %v]", got.P50, tt.p50Lo, tt.p50Hi)
			}
			if got.P99 < tt.p99Lo || got.P99 > tt.p99Hi {
				t.Errorf("got p99 %v, want in [%v, %v]", got.P99, tt.p99Lo, tt.p99Hi)
			}
			if got.Min != tt.wantMin || got.Max != tt.wantMax {
				t.Errorf("got min %v max %v, want %v %v",
					got.Min, got.Max, tt.wantMin, tt.wantMax)
			}
		})
	}
}

func TestStatsLabelsBounded(t *testing.T) {
	t.Parallel()
	s := NewStats(func() time.Time { return t0 })
	for i := range 1000 {
		s.Observe("leak-"+string(rune('A'+i%26))+string(rune('a'+i/26)), 200, 0)
	}
	s.Observe("", 200, 0)

	eps := s.Endpoints()
	if len(eps) != MaxEndpoints+1 {
		t.Fatalf("got %d labels, want %d", len(eps), MaxEndpoints+1)
	}
	var total uint64
	for _, e := range eps {
		total += e.Requests
	}
	if total != 1001 {
		t.Errorf("got %d requests over all labels, want 1001", total)
	}
	other := find(t, s, OverflowEndpoint)
	if other.Requests != 1001-MaxEndpoints {
		t.Errorf("got %d requests under %q, want %d",
			other.Requests, OverflowEndpoint, 1001-MaxEndpoints)
	}

	// The memory per label is fixed: the doc promises about 11 KiB.
	if size := unsafe.Sizeof(series{}); size > 12<<10 {
		t.Errorf("got %d bytes per label, want at most 12 KiB", size)
	}
}

func TestStatsUnlabelled(t *testing.T) {
	t.Parallel()
	s := NewStats(func() time.Time { return t0 })
	s.Observe("", 404, time.Millisecond)
	if got := find(t, s, UnlabelledEndpoint); got.Requests != 1 || got.Successes != 1 {
		t.Errorf("got %+v, want one successful request", got)
	}
}

func TestStatsOrder(t *testing.T) {
	t.Parallel()
	s := NewStats(func() time.Time { return t0 })
	labels := []string{"route:/b", "proxy", "kb/reset", "health", "provision", "route:/a"}
	for _, l := range labels {
		s.Observe(l, 200, 0)
	}
	want := []string{"health", "provision", "kb/reset", "proxy", "route:/a", "route:/b"}
	eps := s.Endpoints()
	for i, e := range eps {
		if i >= len(want) || e.Endpoint != want[i] {
			t.Fatalf("got order %v, want %v", eps, want)
		}
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	s := NewStats(func() time.Time { return t0 })
	s.Observe("route:/chat/*", 200, time.Millisecond)
	label := "route:/chat/*"
	allocs := testing.AllocsPerRun(1000, func() {
		s.Observe(label, 200, 3*time.Millisecond)
	})
	if allocs != 0 {
		t.Errorf("got %v allocations per Observe, want 0", allocs)
	}
}

// Run with -race: concurrent observers and readers.
func TestStatsConcurrent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := t0
	s := NewStats(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				s.Observe(fakeEndpoints[(g+i)%len(fakeEndpoints)], 200, time.Millisecond)
				if i%100 == 0 {
					mu.Lock()
					now = now.Add(time.Second)
					mu.Unlock()
					_ = s.Endpoints()
				}
			}
		})
	}
	wg.Wait()
	var total uint64
	for _, e := range s.Endpoints() {
		total += e.Requests
	}
	if total != 8*500 {
		t.Errorf("got %d requests, want %d", total, 8*500)
	}
}

func BenchmarkObserve(b *testing.B) {
	s := NewStats(nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Observe("proxy", 200, 3*time.Millisecond)
		}
	})
}

// FuzzStatsObserve checks the sums' invariants for any input.
func FuzzStatsObserve(f *testing.F) {
	f.Add("health", 200, int64(1e6), "proxy", 503, int64(-5))
	f.Add("", 0, int64(1<<62), "kb/status", 999, int64(0))
	f.Fuzz(func(t *testing.T, l1 string, s1 int, d1 int64, l2 string, s2 int, d2 int64) {
		s := NewStats(func() time.Time { return t0 })
		s.Observe(l1, s1, time.Duration(d1))
		s.Observe(l2, s2, time.Duration(d2))
		s.Observe(l1, s2, time.Duration(d2))
		var total uint64
		for _, e := range s.Endpoints() {
			total += e.Requests
			if e.Successes > e.Requests || e.ClientErrors+e.ServerErrors > e.Requests {
				t.Fatalf("inconsistent counts %+v", e)
			}
			if e.Min < 0 || e.Min > e.P50 || e.P50 > e.P99 || e.P99 > e.Max ||
				e.Mean < e.Min || e.Mean > e.Max {
				t.Fatalf("inconsistent latencies %+v", e)
			}
		}
		if total != 3 {
			t.Fatalf("got %d requests, want 3", total)
		}
	})
}
