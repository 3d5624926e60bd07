package config

import (
	"strings"
	"testing"
	"time"
)

func TestBreakerAndDeadlineRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string // appended to base: its first line is line 3
		path string
		line int
		want string
	}{
		{"ratio over 1", "[app.breaker]\nfailure_ratio = 1.5\n",
			"app.breaker.failure_ratio", 4, "between 0 and 1, like 0.5 (got 1.5)"},
		{"negative ratio", "[app.breaker]\nfailure_ratio = -0.1\n",
			"app.breaker.failure_ratio", 4, "between 0 and 1"},
		{"ratio not a number", "[app.breaker]\nfailure_ratio = \"half\"\n",
			"app.breaker.failure_ratio", 4, "must be a number like 0.5"},
		{"no rule", "[app.breaker]\nconsecutive_failures = 0\nfailure_ratio = 0\n",
			"app.breaker", 3, "set enabled = false"},
		{"negative run", "[app.breaker]\nconsecutive_failures = -1\n",
			"app.breaker.consecutive_failures", 4, "between 0 and 1000000"},
		{"ratio without min", "[app.breaker]\nmin_requests = 0\n",
			"app.breaker.min_requests", 4, "between 1 and 1000000"},
		{"ratio without interval", "[app.breaker]\ninterval = \"0s\"\n",
			"app.breaker.interval", 4, "must be a positive duration"},
		{"zero open time", "[app.breaker]\nopen_for = \"0s\"\n",
			"app.breaker.open_for", 4, "must be a positive duration"},
		{"no probes", "[app.breaker]\nhalf_open_requests = 0\n",
			"app.breaker.half_open_requests", 4, "between 1 and 1000000"},
		{"provision at budget", "[zimmer.deadlines]\nprovision = \"10s\"\n",
			"zimmer.deadlines.provision", 4, "under the callers' budget of 10s"},
		{"consume over budget", "[zimmer.deadlines]\nconsume = \"5s\"\n",
			"zimmer.deadlines.consume", 4, "budget of 3s"},
		{"zero kb", "[zimmer.deadlines]\nkb = \"0s\"\n",
			"zimmer.deadlines.kb", 4, "must be a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblem(t, onlyProblem(t, base+tt.doc), tt.path, tt.line, tt.want)
		})
	}
}

func TestBreakerDefaultsAndOverrides(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base)
	if c.App.Breaker != defaultBreaker() || c.Zimmer.Deadlines != defaultDeadlines() {
		t.Errorf("got %+v and %+v, want the defaults", c.App.Breaker, c.Zimmer.Deadlines)
	}

	c = mustParse(t, base+"[app.breaker]\nfailure_ratio = 1\nrequired = false\n"+
		"[zimmer.deadlines]\nkb = \"9s\"\n",
		"ZIMMER_SIDECAR_APP__BREAKER__CONSECUTIVE_FAILURES=0",
		"ZIMMER_SIDECAR_ZIMMER__DEADLINES__CONSUME=1500ms")
	b := c.App.Breaker
	if b.FailureRatio != 1 || b.Required || b.ConsecutiveFailures != 0 {
		t.Errorf("breaker %+v: want ratio 1 (a whole number), not required, "+
			"no run rule", b)
	}
	if d := c.Zimmer.Deadlines; d.KB != 9*time.Second || d.Consume != 1500*time.Millisecond {
		t.Errorf("deadlines %+v: want kb 9s, consume 1.5s", d)
	}

	c = mustParse(t, base, "ZIMMER_SIDECAR_APP__BREAKER__FAILURE_RATIO=0.25")
	if got := c.App.Breaker.FailureRatio; got != 0.25 {
		t.Errorf("ratio from the environment: got %g, want 0.25", got)
	}
	p := onlyProblem(t, base, "ZIMMER_SIDECAR_APP__BREAKER__FAILURE_RATIO=lots")
	if p.Path != "app.breaker.failure_ratio" || !strings.Contains(p.Message, "a number") {
		t.Errorf("bad ratio from the environment: got %s: %s", p.Path, p.Message)
	}
}

func TestDisabledBreakerIsNotChecked(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+"[app.breaker]\nenabled = false\nopen_for = \"0s\"\n"+
		"consecutive_failures = 0\nfailure_ratio = 0\n")
	if c.App.Breaker.Enabled {
		t.Error("got an enabled breaker")
	}
}

func TestDeadlineNearBudgetWarns(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+"[zimmer.deadlines]\nconsume = \"2900ms\"\n")
	var got []Problem
	for _, w := range c.Warnings() {
		if strings.HasPrefix(w.Path, "zimmer.deadlines") {
			got = append(got, w)
		}
	}
	if len(got) != 1 || got[0].Path != "zimmer.deadlines.consume" ||
		!strings.Contains(got[0].Message, "for the network") {
		t.Errorf("got deadline warnings %v, want one about consume", got)
	}
}

// FuzzBreakerRatio checks that no ratio value, from the file or the
// environment, panics the loader or passes validation outside [0, 1].
func FuzzBreakerRatio(f *testing.F) {
	for _, s := range []string{"0.5", "1", "0", "-1", "1e400", "nan", "inf", `"x"`,
		"0x1p-2", "[1]", "{a=1}"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, file, env string) {
		if strings.ContainsAny(env, "\x00\n") {
			return
		}
		for _, tc := range []struct {
			doc string
			env []string
		}{
			{base + "[app.breaker]\nfailure_ratio = " + file + "\n", nil},
			{base, []string{"ZIMMER_SIDECAR_APP__BREAKER__FAILURE_RATIO=" + env}},
		} {
			c, err := parse(t, tc.doc, tc.env, nil)
			if err != nil {
				continue
			}
			if r := c.App.Breaker.FailureRatio; !(r >= 0 && r <= 1) {
				t.Errorf("accepted ratio %g", r)
			}
		}
	})
}
