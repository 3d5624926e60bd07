package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Errors callers may branch on.
var (
	// ErrAlreadyRunning is returned by Run while another Run is active.
	ErrAlreadyRunning = errors.New("health: monitor already running")
	// ErrDuplicateName is returned when a probe or check name is taken.
	ErrDuplicateName = errors.New("health: duplicate check name")
)

// Verdict statuses, as written in the "status" field of /health.
const (
	StatusOK       = "ok"
	StatusDegraded = "degraded"
	StatusDown     = "down"
)

// Options configures a Monitor.
type Options struct {
	// BaseURL is the app's address (scheme and host); probe paths are
	// requested on it. Required when Probes is not empty.
	BaseURL *url.URL
	// Probes are the active probes. None: /health reports only the
	// sidecar itself and registered checks.
	Probes []ProbeOptions
	// Version is reported as "version" in /health.
	Version string
	// Client sends the probes. Nil: a private client with its own
	// transport. Whatever the client, redirects are never followed: the
	// Monitor uses a shallow copy with its own CheckRedirect.
	Client *http.Client
	// Now is the clock for latencies, "since" and "uptime". Nil:
	// time.Now. Intervals and timeouts always use real timers.
	Now func() time.Time
	// Started is when the sidecar started; "uptime" counts from it.
	// Zero: the time New is called.
	Started time.Time
}

// CheckResult is what a registered check reports.
type CheckResult struct {
	// State is StateUp, StateDegraded or StateDown. Any other value
	// counts as StateDegraded.
	State State
	// Required: a down check makes the whole verdict down (503).
	Required bool
	// Error is a short reason published in /health. It must hold no
	// secret.
	Error string
}

// CheckStatus is one entry of a Verdict.
type CheckStatus struct {
	State    State
	Required bool
	// Probe: the entry is an active probe (Latency is meaningful);
	// false: a registered check.
	Probe bool
	// Latency is the last check's time to response headers.
	Latency time.Duration
	// Error is the last failure's reason while the probe is not up or
	// slow (a down probe that is recovering keeps it), or what a
	// registered check said.
	Error string
	// Since is the last change of State.
	Since time.Time
}

// Verdict is the sidecar's overall health.
type Verdict struct {
	// Status is StatusOK, StatusDegraded or StatusDown.
	Status string
	// Checks holds every probe and registered check by name.
	Checks map[string]CheckStatus
}

// HTTPStatus is the status /health answers with: 503 when the verdict is
// down, else 200.
func (v Verdict) HTTPStatus() int {
	if v.Status == StatusDown {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// ProbeStatus is the full state of one probe, for a status page.
type ProbeStatus struct {
	Options ProbeOptions // defaults applied
	State   State
	Passes  int // consecutive passes
	Fails   int // consecutive failures
	Latency time.Duration
	Error   string
	Since   time.Time
	// Recent holds up to the last 20 results, oldest first.
	Recent []Result
}

// probe is one configured probe and its state; Monitor.mu guards opts
// and st.
type probe struct {
	opts   ProbeOptions
	target string
	st     probeState
}

// external is one registered check.
type external struct {
	name string
	fn   func() CheckResult
}

// extSeen is the last state observed from a registered check.
type extSeen struct {
	state State
	since time.Time
}

// Monitor probes the app and keeps the verdict. All methods are safe for
// concurrent use.
type Monitor struct {
	base    *url.URL
	version string
	client  *http.Client
	now     func() time.Time
	started time.Time

	running atomic.Bool
	changed chan struct{} // capacity 1: the probe set changed

	// externals is copied on write so /health reads it without a lock.
	externals atomic.Pointer[[]external]
	// cache is the encoded answer; nil after any state change.
	cache atomic.Pointer[snapshot]

	mu      sync.Mutex // guards probes, every probe's opts and st, extSeen
	probes  []*probe   // in configuration order
	extSeen map[string]extSeen
}

// New validates opts and returns a Monitor whose probes are all pending.
// Call CheckNow for a first verdict and Run to keep probing.
func New(opts Options) (*Monitor, error) {
	m := &Monitor{
		base:    opts.BaseURL,
		version: opts.Version,
		now:     opts.Now,
		started: opts.Started,
		changed: make(chan struct{}, 1),
		extSeen: make(map[string]extSeen),
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.started.IsZero() {
		m.started = m.now()
	}
	if opts.Client == nil {
		m.client = newProbeClient()
	} else {
		c := *opts.Client
		c.CheckRedirect = noRedirect
		m.client = &c
	}
	m.externals.Store(&[]external{})

	if err := m.Update(opts.Probes); err != nil {
		return nil, fmt.Errorf("new health monitor: %w", err)
	}
	return m, nil
}

// Update replaces the probes. A probe whose name, method and path are
// unchanged keeps its state, counters and history; its other options take
// effect from its next result. Other probes start pending. On any error
// nothing changes. A running Run picks up the change at once.
func (m *Monitor) Update(probes []ProbeOptions) error {
	// Step 1: validate everything before touching state.
	list := make([]ProbeOptions, len(probes))
	targets := make([]string, len(probes))
	seen := make(map[string]bool, len(probes))
	var errs []error
	for i, o := range probes {
		o = o.withDefaults()
		list[i] = o
		if err := o.validate(); err != nil {
			errs = append(errs, fmt.Errorf("probe %d (%q): %w", i, o.Name, err))
			continue
		}
		if seen[o.Name] {
			errs = append(errs, fmt.Errorf("probe %q: %w", o.Name, ErrDuplicateName))
		}
		seen[o.Name] = true
		t, err := m.target(o.Path)
		if err != nil {
			errs = append(errs, fmt.Errorf("probe %q: %w", o.Name, err))
		}
		targets[i] = t
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Step 2: swap, keeping the state of unchanged probes. Register
	// holds the lock too, so the name check and the swap are atomic.
	now := m.now() // read before locking: the clock is the caller's code
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range list {
		if m.hasExternal(o.Name) {
			return fmt.Errorf("probe %q: %w", o.Name, ErrDuplicateName)
		}
	}
	old := make(map[string]*probe, len(m.probes))
	for _, p := range m.probes {
		old[p.opts.Name] = p
	}
	next := make([]*probe, len(list))
	for i, o := range list {
		p := old[o.Name]
		if p == nil || p.opts.Method != o.Method || p.opts.Path != o.Path {
			p = &probe{target: targets[i]}
			p.st.state = StatePending
			p.st.since = now
		}
		p.opts = o
		next[i] = p
	}
	m.probes = next
	m.cache.Store(nil)

	// Step 3: wake Run without blocking.
	select {
	case m.changed <- struct{}{}:
	default:
	}
	return nil
}

// target resolves a probe path against the base URL.
func (m *Monitor) target(p string) (string, error) {
	if m.base == nil || m.base.Host == "" ||
		(m.base.Scheme != "http" && m.base.Scheme != "https") {
		return "", errors.New("base url must be an absolute http or https url")
	}
	ref, err := parseProbePath(p)
	if err != nil {
		return "", err
	}
	return m.base.ResolveReference(ref).String(), nil
}

// Register adds a check that feeds the verdict. fn is called on every
// /health answer and every Verdict call, without any lock of the Monitor
// held, possibly concurrently: it must be cheap, must not block and must
// be safe for concurrent use.
func (m *Monitor) Register(name string, fn func() CheckResult) error {
	if name == "" || fn == nil {
		return errors.New("health: register needs a name and a function")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hasExternal(name) {
		return fmt.Errorf("register %q: %w", name, ErrDuplicateName)
	}
	for _, p := range m.probes {
		if p.opts.Name == name {
			return fmt.Errorf("register %q: %w", name, ErrDuplicateName)
		}
	}
	cur := *m.externals.Load()
	next := make([]external, len(cur), len(cur)+1)
	copy(next, cur)
	next = append(next, external{name: name, fn: fn})
	m.externals.Store(&next)
	m.cache.Store(nil)
	return nil
}

// hasExternal reports whether a check called name is registered.
func (m *Monitor) hasExternal(name string) bool {
	for _, e := range *m.externals.Load() {
		if e.name == name {
			return true
		}
	}
	return false
}

// Run probes the app, each probe on its own interval in a goroutine Run
// owns, until ctx ends; it returns nil once every goroutine has stopped.
// A probe that is still pending is checked at once. A check cut short by
// ctx ending is not recorded. Only one Run may be active at a time.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer m.running.Store(false)

	type worker struct {
		opts   ProbeOptions
		cancel context.CancelFunc
	}
	workers := make(map[*probe]worker)
	var wg sync.WaitGroup
	defer func() {
		for _, w := range workers {
			w.cancel()
		}
		wg.Wait()
	}()

	for {
		// Read the current probe set.
		m.mu.Lock()
		want := make(map[*probe]ProbeOptions, len(m.probes))
		for _, p := range m.probes {
			want[p] = p.opts
		}
		m.mu.Unlock()

		// Stop workers of removed or reconfigured probes.
		for p, w := range workers {
			if o, ok := want[p]; !ok || o != w.opts {
				w.cancel()
				delete(workers, p)
			}
		}

		// Start workers for new or reconfigured probes.
		for p, o := range want {
			if _, ok := workers[p]; ok {
				continue
			}
			wctx, cancel := context.WithCancel(ctx)
			workers[p] = worker{opts: o, cancel: cancel}
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.loop(wctx, p, o)
			}()
		}

		select {
		case <-ctx.Done():
			return nil
		case <-m.changed:
		}
	}
}

// loop checks p every o.Every until ctx ends.
func (m *Monitor) loop(ctx context.Context, p *probe, o ProbeOptions) {
	m.mu.Lock()
	pending := p.st.state == StatePending
	m.mu.Unlock()
	if pending {
		m.checkAndRecord(ctx, p, o)
	}

	t := time.NewTicker(o.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.checkAndRecord(ctx, p, o)
		}
	}
}

// CheckNow checks every probe once, concurrently, waits for all of them
// and returns the resulting verdict. It suits start-up (a verdict before
// listeners open) and tests. Checks cut short by ctx are not recorded.
func (m *Monitor) CheckNow(ctx context.Context) Verdict {
	m.mu.Lock()
	type job struct {
		p *probe
		o ProbeOptions
	}
	jobs := make([]job, len(m.probes))
	for i, p := range m.probes {
		jobs[i] = job{p: p, o: p.opts}
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { m.checkAndRecord(ctx, j.p, j.o) })
	}
	wg.Wait()
	return m.Verdict()
}

// checkAndRecord runs one check of p and feeds its result to the state
// machine.
func (m *Monitor) checkAndRecord(ctx context.Context, p *probe, o ProbeOptions) {
	res, ok := m.check(ctx, p.target, o)
	if !ok {
		return
	}
	now := m.now()
	m.mu.Lock()
	p.st.apply(res, p.opts, now)
	m.cache.Store(nil)
	m.mu.Unlock()
}

// Verdict returns the current verdict from the last known state. It calls
// the registered checks but never waits on the app.
func (m *Monitor) Verdict() Verdict {
	s := m.current()
	v := Verdict{Status: s.verdict.Status, Checks: make(map[string]CheckStatus)}
	for k, c := range s.verdict.Checks {
		v.Checks[k] = c
	}
	return v
}

// Probes returns the full state of every probe, in configuration order.
func (m *Monitor) Probes() []ProbeStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ProbeStatus, len(m.probes))
	for i, p := range m.probes {
		out[i] = ProbeStatus{
			Options: p.opts,
			State:   p.st.state,
			Passes:  p.st.passes,
			Fails:   p.st.fails,
			Latency: p.st.latency,
			Error:   p.st.err,
			Since:   p.st.since,
			Recent:  p.st.recent(),
		}
	}
	return out
}
