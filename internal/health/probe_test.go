package health

import (
	"testing"
	"time"
)

func TestStateMachine(t *testing.T) {
	t.Parallel()
	pass := Result{OK: true, Latency: 10 * time.Millisecond}
	slow := Result{OK: true, Latency: 2 * time.Second}
	fail := Result{Error: "status 500"}
	opts := ProbeOptions{PassAfter: 2, FailAfter: 3, SlowAfter: time.Second}

	tests := []struct {
		name    string
		opts    ProbeOptions
		results []Result
		want    []State // state after each result
	}{
		{"first pass is up", opts, []Result{pass}, []State{StateUp}},
		{"first fail is failing", opts, []Result{fail}, []State{StateFailing}},
		{
			"fail after reached is down", opts,
			[]Result{pass, fail, fail, fail},
			[]State{StateUp, StateFailing, StateFailing, StateDown},
		},
		{
			"one pass ends failing", opts,
			[]Result{fail, fail, pass, fail, fail},
			[]State{StateFailing, StateFailing, StateUp, StateFailing, StateFailing},
		},
		{
			"down needs pass after passes", opts,
			[]Result{fail, fail, fail, pass, pass, pass},
			[]State{StateFailing, StateFailing, StateDown, StateDown, StateUp, StateUp},
		},
		{
			"a failure restarts recovery", opts,
			[]Result{fail, fail, fail, pass, fail, pass, pass},
			[]State{
				StateFailing, StateFailing, StateDown,
				StateDown, StateDown, StateDown, StateUp,
			},
		},
		{
			"slow pass is slow", opts,
			[]Result{slow, pass, slow},
			[]State{StateSlow, StateUp, StateSlow},
		},
		{
			"slow recovery stays down then slow", opts,
			[]Result{fail, fail, fail, slow, slow},
			[]State{StateFailing, StateFailing, StateDown, StateDown, StateSlow},
		},
		{
			"no slow after means never slow",
			ProbeOptions{PassAfter: 1, FailAfter: 1},
			[]Result{slow}, []State{StateUp},
		},
		{
			"fail after one goes straight down",
			ProbeOptions{PassAfter: 1, FailAfter: 1},
			[]Result{fail, pass}, []State{StateDown, StateUp},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := probeState{state: StatePending}
			now := time.Unix(1000, 0)
			for i, r := range tt.results {
				now = now.Add(time.Second)
				before := s.state
				s.apply(r, tt.opts, now)
				if s.state != tt.want[i] {
					t.Fatalf("after result %d: got %s, want %s", i, s.state, tt.want[i])
				}
				if before != s.state && !s.since.Equal(now) {
					t.Errorf("result %d changed state but since = %v, want %v",
						i, s.since, now)
				}
				if before == s.state && s.since.Equal(now) {
					t.Errorf("result %d kept state but moved since", i)
				}
			}
		})
	}
}

func TestStateMachineCounters(t *testing.T) {
	t.Parallel()
	s := probeState{state: StatePending}
	o := ProbeOptions{PassAfter: 1, FailAfter: 5}
	s.apply(Result{OK: true}, o, time.Unix(1, 0))
	s.apply(Result{Error: "connection refused"}, o, time.Unix(2, 0))
	s.apply(Result{Error: "status 502"}, o, time.Unix(3, 0))
	if s.fails != 2 || s.passes != 0 {
		t.Errorf("got fails %d passes %d, want 2 and 0", s.fails, s.passes)
	}
	if s.err != "status 502" {
		t.Errorf("got last error %q, want %q", s.err, "status 502")
	}
	s.apply(Result{OK: true, Latency: 7 * time.Millisecond}, o, time.Unix(4, 0))
	if s.fails != 0 || s.passes != 1 || s.err != "" || s.latency != 7*time.Millisecond {
		t.Errorf("after pass got %+v", s)
	}
}

func TestHistoryRing(t *testing.T) {
	t.Parallel()
	s := probeState{state: StatePending}
	if got := s.recent(); len(got) != 0 {
		t.Fatalf("got %d results before any, want 0", len(got))
	}
	o := ProbeOptions{PassAfter: 1, FailAfter: 1}
	const n = historySize + 5
	for i := range n {
		s.apply(Result{OK: true, Latency: time.Duration(i)}, o, time.Unix(int64(i), 0))
	}
	got := s.recent()
	if len(got) != historySize {
		t.Fatalf("got %d results, want %d", len(got), historySize)
	}
	for i, r := range got {
		if want := time.Duration(n - historySize + i); r.Latency != want {
			t.Fatalf("result %d: got latency %v, want %v (oldest first)", i, r.Latency, want)
		}
	}
}

func TestRecoveringKeepsLastError(t *testing.T) {
	t.Parallel()
	s := probeState{state: StatePending}
	o := ProbeOptions{PassAfter: 2, FailAfter: 1}
	s.apply(Result{Error: "timeout after 2s"}, o, time.Unix(1, 0))
	s.apply(Result{OK: true}, o, time.Unix(2, 0))
	if s.state != StateDown || s.err != "timeout after 2s" {
		t.Errorf("recovering: got %s %q, want down with the last failure", s.state, s.err)
	}
	s.apply(Result{OK: true}, o, time.Unix(3, 0))
	if s.state != StateUp || s.err != "" {
		t.Errorf("recovered: got %s %q, want up with no error", s.state, s.err)
	}
}
