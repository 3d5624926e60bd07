package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/sidecar"
)

// The chaos tests break the app under a running sidecar (killed in the
// middle of a request, hung past every deadline, flapping, failing until
// the breaker opens) and check what the platform sees: a clean JSON
// answer inside its budget every time, and a /health that says what the
// configuration says it should. They use the Python example app.

// The callers' budgets (../shared/contract.md): the tighter of the
// guide's and the platform client's timeouts.
const (
	provisionBudget = 10 * time.Second
	consumeBudget   = 3 * time.Second
	kbBudget        = 10 * time.Second
)

// chaosProbes probe every 200ms, fail after 2 misses, recover after 2
// passes.
var chaosProbes = e2etest.FastProbes("200ms", "150ms", 2, 2)

// healthView is what /health said.
type healthView struct {
	code   int
	class  string // the platform classifier's verdict
	Status string `json:"status"`
	Checks map[string]struct {
		State string `json:"state"`
	} `json:"checks"`
}

func (h healthView) String() string {
	return fmt.Sprintf("%d %s (%s), breaker %q", h.code, h.Status, h.class,
		h.Checks[sidecar.BreakerCheck].State)
}

// readHealth gets /health of the platform's sidecar.
func readHealth(ctx context.Context, p *e2etest.Platform) (healthView, error) {
	r, class, err := p.Health(ctx, "/health")
	if err != nil {
		return healthView{}, err
	}
	v := healthView{code: r.Status, class: class}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		return healthView{}, fmt.Errorf("health body %q: %w", r.Body, err)
	}
	return v, nil
}

// waitHealth waits until /health answers code with status and, unless
// breaker is empty, the breaker's check in that state.
func waitHealth(ctx context.Context, t *testing.T, p *e2etest.Platform, code int,
	status, breaker string) {
	t.Helper()
	e2etest.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		v, err := readHealth(ctx, p)
		if err != nil {
			return false, err.Error()
		}
		ok := v.code == code && v.Status == status &&
			(breaker == "" || v.Checks[sidecar.BreakerCheck].State == breaker)
		return ok, fmt.Sprintf("/health %s; want %d %s, breaker %q", v, code, status,
			breaker)
	})
}

// pythonStack starts the Python app and a sidecar with the chaos probes.
func pythonStack(t *testing.T, env []string, edits ...e2etest.Edit) *stack {
	t.Helper()
	return startStack(t, apps[0], env, append([]e2etest.Edit{chaosProbes}, edits...)...)
}

// timed is one answer and how long it took.
type timed struct {
	resp    *e2etest.Response
	err     error
	elapsed time.Duration
}

// timedDo sends req and measures the wait.
func timedDo(ctx context.Context, p *e2etest.Platform, req e2etest.Request) timed {
	start := time.Now()
	r, err := p.Do(ctx, req)
	return timed{resp: r, err: err, elapsed: time.Since(start)}
}

// isJSONObject reports whether an answer's body is a JSON object.
func isJSONObject(r *e2etest.Response) bool {
	var v map[string]any
	return json.Unmarshal(r.Body, &v) == nil && v != nil
}

// TestChaosAppKilledMidRequest: the app dies while it holds a proxied
// request. The client gets a clean 502 JSON at once (not when the app
// would have answered), /health turns down once fail_after probes
// failed, and healthy again when the app is back.
func TestChaosAppKilledMidRequest(t *testing.T) {
	t.Parallel()
	s := pythonStack(t, nil)
	ctx := testContext(t)
	waitHealth(ctx, t, s.platform, http.StatusOK, "ok", "up")

	// 1. A request the app would answer in 30s, in flight at the app: its
	// connection stays established while a probe's lasts a moment.
	const slowMS = 30_000
	done := make(chan timed, 1)
	go func() {
		done <- timedDo(ctx, s.platform, e2etest.Request{Method: http.MethodGet,
			Path: s.tc.slow(slowMS)})
	}()
	streak := 0
	e2etest.Eventually(t, 10*time.Second, 20*time.Millisecond, func() (bool, string) {
		n, err := e2etest.EstablishedOn(s.app.Port())
		if err != nil {
			t.Skipf("cannot see connections: %v", err)
		}
		if n > 0 {
			streak++
		} else {
			streak = 0
		}
		return streak >= 3, fmt.Sprintf("%d connections on the app's port", n)
	})

	// 2. SIGKILL the app.
	port := s.app.Port()
	killed := time.Now()
	s.app.Kill()
	got := <-done
	if got.err != nil {
		t.Fatalf("request across the kill: %v", got.err)
	}
	if got.resp.Status != http.StatusBadGateway || got.resp.Detail() != "App unavailable" {
		t.Errorf("request across the kill: got %s, want 502 JSON App unavailable", got.resp)
	}
	// An upper bound: the answer came from the kill, not the app's 30s.
	if waited := time.Since(killed); waited > 5*time.Second {
		t.Errorf("the answer came %s after the kill", waited)
	}

	// 3. /health follows the probes: down, then up with the app back.
	waitHealth(ctx, t, s.platform, http.StatusServiceUnavailable, "down", "")
	s.app = e2etest.StartApp(t, s.tc.app, port, s.dataDir)
	waitHealth(ctx, t, s.platform, http.StatusOK, "ok", "")
}

// TestChaosHungAppWithinBudgets: the app stops answering (SIGSTOP: its
// connections are accepted by the kernel and never read). Every Zimmer
// endpoint that calls it answers a JSON 504 under its deadline, inside
// the platform's budget, and consume, which never calls the app, still
// answers 200.
func TestChaosHungAppWithinBudgets(t *testing.T) {
	t.Parallel()
	s := pythonStack(t, nil)
	ctx := testContext(t)
	const id = 611
	provision(ctx, t, s, id, 3)

	if err := s.app.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.app.Signal(syscall.SIGCONT) })
	s.app.WaitStopped(t)

	uaid := strconv.Itoa(id)
	calls := []struct {
		name   string
		req    e2etest.Request
		budget time.Duration
		want   int
	}{
		{"provision", e2etest.Request{Method: http.MethodPost, Path: s.zimmer("provision"),
			Body:      e2etest.ProvisionBody{UserAutomationID: id + 1, UserID: 42},
			WithToken: true}, provisionBudget, http.StatusGatewayTimeout},
		{"kb status (platform)", e2etest.Request{Method: http.MethodPost,
			Path: s.zimmer("kb/status"), Body: map[string]int{"user_id": 42,
				"user_automation_id": id}, WithToken: true},
			kbBudget, http.StatusGatewayTimeout},
		{"kb status (guide)", e2etest.Request{Method: http.MethodGet,
			Path: s.zimmer("kb/status") + "?user_automation_id=" + uaid, WithToken: true},
			kbBudget, http.StatusGatewayTimeout},
		{"kb reset", e2etest.Request{Method: http.MethodPost,
			Path: s.zimmer("kb/reset") + "?user_automation_id=" + uaid, WithToken: true},
			kbBudget, http.StatusGatewayTimeout},
		{"consume", e2etest.Request{Method: http.MethodPost,
			Path: s.zimmer("usage/consume"), Body: e2etest.ConsumeBody{
				UserAutomationID: id, Units: 1, UsageType: "chaos"}, WithToken: true},
			consumeBudget, http.StatusOK},
	}
	results := make([]timed, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = timedDo(ctx, s.platform, c.req)
		}()
	}
	wg.Wait()

	for i, c := range calls {
		got := results[i]
		switch {
		case got.err != nil:
			t.Errorf("%s: %v", c.name, got.err)
		case got.resp.Status != c.want || !isJSONObject(got.resp):
			t.Errorf("%s: got %s, want %d with a JSON object", c.name, got.resp, c.want)
		case got.elapsed >= c.budget: // the contract's upper bound
			t.Errorf("%s: answered after %s, over the %s budget", c.name,
				got.elapsed.Round(time.Millisecond), c.budget)
		}
		t.Logf("%s: %d after %s", c.name, got.resp.Status, got.elapsed.Round(time.Millisecond))
	}
}

// TestChaosFlappingApp: the app's health goes down and up again, twice.
// A sidecar whose probe is required reports it down (503); one whose
// probe is not required reports degraded (200); both recover to ok.
func TestChaosFlappingApp(t *testing.T) {
	t.Parallel()
	s := pythonStack(t, nil)
	ctx := testContext(t)
	optional := e2etest.WriteConfig(t, s.tc.app.ConfigPath(t), "", chaosProbes,
		e2etest.Edit{Old: "pass_after = 2\n", New: "pass_after = 2\nrequired = false\n",
			Count: 1})
	sc2 := e2etest.StartSidecar(t, e2etest.SidecarOptions{Config: optional,
		AppURL: s.app.URL(), Ledger: t.TempDir() + "/ledger.db", Token: s.token,
		Name: "sidecar (probe not required)"})
	required, notRequired := s.platform, e2etest.NewPlatform(sc2.PublicURL(), s.token)
	app := e2etest.NewPlatform(s.app.URL(), "")

	for cycle := range 2 {
		setAppHealth(ctx, t, app, true)
		waitHealth(ctx, t, required, http.StatusServiceUnavailable, "down", "")
		waitHealth(ctx, t, notRequired, http.StatusOK, "degraded", "")
		if v, err := readHealth(ctx, notRequired); err != nil ||
			v.class != health.ClassDegraded {
			t.Errorf("cycle %d: optional probe down: %v %v, want the platform's degraded",
				cycle, v, err)
		}

		setAppHealth(ctx, t, app, false)
		waitHealth(ctx, t, required, http.StatusOK, "ok", "up")
		waitHealth(ctx, t, notRequired, http.StatusOK, "ok", "up")
	}
}

// setAppHealth makes the app's own health route fail or pass, through
// the app's debug route (called directly, not through the sidecar).
func setAppHealth(ctx context.Context, t *testing.T, app *e2etest.Platform, down bool) {
	t.Helper()
	mustStatus(ctx, t, app, e2etest.Request{Method: http.MethodPost,
		Path: "/debug/health", Body: map[string]any{"down": down, "delay_ms": 0}},
		http.StatusOK)
}

// TestChaosBreakerOpensAndCloses: the app dies and three calls fail, so
// the breaker opens: calls get 503 JSON with Retry-After at once, the
// app (back by then) is not contacted, and /health shows the breaker
// down. After open_for it is half-open (degraded); the next call probes
// the app and closes it.
func TestChaosBreakerOpensAndCloses(t *testing.T) {
	t.Parallel()
	const openFor = 5 * time.Second
	s := pythonStack(t, []string{
		"ZIMMER_SIDECAR_APP__BREAKER__CONSECUTIVE_FAILURES=3",
		"ZIMMER_SIDECAR_APP__BREAKER__FAILURE_RATIO=0",
		"ZIMMER_SIDECAR_APP__BREAKER__OPEN_FOR=" + openFor.String(),
	})
	ctx := testContext(t)
	waitHealth(ctx, t, s.platform, http.StatusOK, "ok", "up")
	slow := e2etest.Request{Method: http.MethodGet, Path: s.tc.slow(1)}

	// 1. The app dies; three failed calls open the breaker.
	port := s.app.Port()
	s.app.Kill()
	for i := range 3 {
		if r := do(ctx, t, s.platform, slow); r.Status != http.StatusBadGateway {
			t.Fatalf("call %d to a dead app: got %s, want 502", i+1, r)
		}
	}
	opened := time.Now()

	// 2. Open: 503 JSON with Retry-After, without waiting on anything.
	got := timedDo(ctx, s.platform, slow)
	if got.err != nil {
		t.Fatal(got.err)
	}
	wait, _ := strconv.Atoi(got.resp.Header.Get("Retry-After"))
	if got.resp.Status != http.StatusServiceUnavailable ||
		got.resp.Detail() != "App unavailable (circuit open)" ||
		wait < 1 || wait > int(openFor/time.Second) {
		t.Errorf("call while open: got %s Retry-After %q, want 503 and 1-%d",
			got.resp, got.resp.Header.Get("Retry-After"), int(openFor/time.Second))
	}
	if got.elapsed > 2*time.Second {
		t.Errorf("call while open took %s", got.elapsed)
	}
	waitHealth(ctx, t, s.platform, http.StatusServiceUnavailable, "down", "down")

	// 3. The app is back, but the breaker is still open: it is not
	// contacted, for proxied calls or the provision hook.
	s.app = e2etest.StartApp(t, s.tc.app, port, s.dataDir)
	r := do(ctx, t, s.platform, slow)
	p, _, err := s.platform.Provision(ctx, s.zimmer("provision"),
		e2etest.ProvisionBody{UserAutomationID: 612, UserID: 42})
	if still := time.Since(opened) < openFor-time.Second; still {
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("proxied call while open: got %s, want 503", r)
		}
		if err != nil || p.Status != http.StatusServiceUnavailable || !isJSONObject(p) ||
			p.Header.Get("Retry-After") == "" {
			t.Errorf("provision while open: got %v %v, want 503 JSON with Retry-After",
				p, err)
		}
		if n := s.app.CountLines(`"GET /slow"`) + s.app.CountLines(`"POST /internal`); n != 0 {
			t.Errorf("the app saw %d calls while the breaker was open", n)
		}
	} else {
		t.Logf("the app took %s to restart: the breaker was no longer open",
			time.Since(opened))
	}

	// 4. Half-open after open_for: degraded, with the probes up again.
	waitHealth(ctx, t, s.platform, http.StatusOK, "degraded", "degraded")

	// 5. The next call probes the app and closes the breaker.
	if r := do(ctx, t, s.platform, slow); r.Status != http.StatusOK {
		t.Fatalf("probe call: got %s, want the app's 200", r)
	}
	waitHealth(ctx, t, s.platform, http.StatusOK, "ok", "up")
}
