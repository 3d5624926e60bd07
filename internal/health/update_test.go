package health

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestUpdateKeepsUnchangedProbes(t *testing.T) {
	t.Parallel()
	clk := newClock()
	app := newApp(t, clk)
	app.status.Store(http.StatusServiceUnavailable)
	m := newMonitor(t, app.url, clk,
		ProbeOptions{Name: "app", Path: "/healthz", FailAfter: 2, Required: true},
		ProbeOptions{Name: "db", Path: "/db"},
		ProbeOptions{Name: "gone", Path: "/gone"})
	m.CheckNow(t.Context())
	m.CheckNow(t.Context())

	err := m.Update([]ProbeOptions{
		// same target, new thresholds: keeps its state
		{Name: "app", Path: "/healthz", FailAfter: 5, PassAfter: 3, Required: true},
		// new path: starts over
		{Name: "db", Path: "/db2"},
		{Name: "new", Path: "/new"},
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}

	ps := m.Probes()
	if len(ps) != 3 {
		t.Fatalf("got %d probes, want 3", len(ps))
	}
	app0 := ps[0]
	if app0.State != StateDown || app0.Fails != 2 || len(app0.Recent) != 2 {
		t.Errorf("app: got %s fails %d history %d, want down 2 2",
			app0.State, app0.Fails, len(app0.Recent))
	}
	if app0.Options.PassAfter != 3 {
		t.Errorf("app: got pass after %d, want the new 3", app0.Options.PassAfter)
	}
	for _, p := range ps[1:] {
		if p.State != StatePending || len(p.Recent) != 0 {
			t.Errorf("%s: got %s with %d results, want pending and none",
				p.Options.Name, p.State, len(p.Recent))
		}
	}
	if _, ok := m.Verdict().Checks["gone"]; ok {
		t.Error("removed probe still in the verdict")
	}

	// The new thresholds apply: three passes to recover.
	app.status.Store(http.StatusOK)
	for i, want := range []State{StateDown, StateDown, StateUp} {
		if got := m.CheckNow(t.Context()).Checks["app"].State; got != want {
			t.Fatalf("pass %d: got %s, want %s", i+1, got, want)
		}
	}
}

func TestUpdateRejectsAndChangesNothing(t *testing.T) {
	t.Parallel()
	clk := newClock()
	app := newApp(t, clk)
	m := newMonitor(t, app.url, clk, ProbeOptions{Name: "app", Path: "/healthz"})
	if err := m.Register("ledger", func() CheckResult {
		return CheckResult{State: StateUp}
	}); err != nil {
		t.Fatal(err)
	}
	m.CheckNow(t.Context())

	tests := []struct {
		name   string
		probes []ProbeOptions
		is     error
	}{
		{"duplicate", []ProbeOptions{{Path: "/a"}, {Path: "/a"}}, ErrDuplicateName},
		{"clashes with a check", []ProbeOptions{{Name: "ledger", Path: "/a"}}, ErrDuplicateName},
		{"bad path", []ProbeOptions{{Path: "/ok"}, {Path: "nope"}}, nil},
	}
	for _, tt := range tests {
		err := m.Update(tt.probes)
		if err == nil {
			t.Errorf("%s: got nil error", tt.name)
			continue
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.is)
		}
	}
	ps := m.Probes()
	if len(ps) != 1 || ps[0].Options.Name != "app" || ps[0].State != StateUp {
		t.Errorf("failed updates changed the probes: %+v", ps)
	}
	err := m.Register("app", func() CheckResult { return CheckResult{} })
	if !errors.Is(err, ErrDuplicateName) {
		t.Errorf("Register clashing with a probe: got %v, want ErrDuplicateName", err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	ok := ProbeOptions{Path: "/healthz"}
	tests := []struct {
		name   string
		base   string
		probes []ProbeOptions
		want   string // a fragment of the error; empty: no error
	}{
		{"no probes, no base", "", nil, ""},
		{"defaults", "http://127.0.0.1:1", []ProbeOptions{ok}, ""},
		{"base missing", "", []ProbeOptions{ok}, "base url"},
		{"base not http", "ftp://127.0.0.1", []ProbeOptions{ok}, "base url"},
		{"relative path", "http://127.0.0.1", []ProbeOptions{{Path: "healthz"}}, "single /"},
		{"other host", "http://127.0.0.1", []ProbeOptions{{Path: "//evil/x"}}, "single /"},
		{"no path", "http://127.0.0.1", []ProbeOptions{{Name: "x"}}, "single /"},
		{"bad method", "http://127.0.0.1", []ProbeOptions{{Path: "/", Method: "G T"}}, "method"},
		{"negative", "http://127.0.0.1",
			[]ProbeOptions{{Path: "/", Every: -time.Second}}, "negative"},
		{"status", "http://127.0.0.1", []ProbeOptions{{Path: "/", ExpectStatus: 700}}, "status"},
		{"fail after", "http://127.0.0.1", []ProbeOptions{{Path: "/", FailAfter: -1}}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{Probes: tt.probes}
			if tt.base != "" {
				opts.BaseURL = mustURL(t, tt.base)
			}
			_, err := New(opts)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	m, err := New(Options{
		BaseURL: mustURL(t, "http://127.0.0.1:1"),
		Probes:  []ProbeOptions{{Path: "/healthz"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := m.Probes()[0].Options
	want := ProbeOptions{
		Name: "/healthz", Method: "GET", Path: "/healthz",
		Every: DefaultEvery, Timeout: DefaultTimeout,
		ExpectStatus: 200, PassAfter: 1, FailAfter: 1,
	}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
