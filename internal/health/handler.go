package health

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// snapshot is an immutable, encoded verdict. The /health body is
// head + uptime + tail: only the uptime changes between state changes.
type snapshot struct {
	verdict Verdict
	code    int
	head    []byte // {"status":...,"version":...,"uptime":
	tail    []byte // ,"checks":{...}}\n

	// What the registered checks said when this was built.
	extList *[]external
	ext     []CheckResult
}

// checkJSON is one entry of "checks" in /health.
type checkJSON struct {
	State     State  `json:"state"`
	Required  bool   `json:"required"`
	LatencyMS *int64 `json:"latency_ms,omitempty"`
	Error     string `json:"error,omitempty"`
	Since     string `json:"since"`
}

// bufPool recycles the per-request body buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Handler answers GET and HEAD /health from the last known state, never
// waiting on the app: 200 with status "ok" or "degraded", 503 with
// "down". Other methods get 405 with an Allow header. The caller routes
// only the exact /health path here; the handler does not look at it.
func (m *Monitor) Handler() http.Handler {
	return http.HandlerFunc(m.serveHealth)
}

func (m *Monitor) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.Error(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	s := m.current()

	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], s.head...)
	b = strconv.AppendInt(b, m.uptime(), 10)
	b = append(b, s.tail...)

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(s.code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b) // the status line is out; nothing left to do
	}

	*bp = b
	bufPool.Put(bp)
}

// uptime is the sidecar's age in whole seconds, never negative.
func (m *Monitor) uptime() int64 {
	d := m.now().Sub(m.started)
	if d < 0 {
		return 0
	}
	return int64(d / time.Second)
}

// current returns the snapshot for the present state, rebuilding it only
// when a probe changed or a registered check answers differently.
func (m *Monitor) current() *snapshot {
	list, res := m.poll()
	s := m.cache.Load()
	if s != nil && s.extList == list && slices.Equal(s.ext, res) {
		return s
	}
	return m.rebuild(list, res)
}

// poll calls every registered check, holding no lock.
func (m *Monitor) poll() (*[]external, []CheckResult) {
	list := m.externals.Load()
	if len(*list) == 0 {
		return list, nil
	}
	res := make([]CheckResult, len(*list))
	for i, e := range *list {
		res[i] = e.fn()
	}
	return list, res
}

// rebuild computes and caches the verdict from the probes and the
// registered checks' results res (in the order of list).
func (m *Monitor) rebuild(list *[]external, res []CheckResult) *snapshot {
	now := m.now() // read before locking: the clock is the caller's code
	m.mu.Lock()
	defer m.mu.Unlock()

	// Step 1: collect every check.
	v := Verdict{Status: StatusOK, Checks: make(map[string]CheckStatus)}
	for _, p := range m.probes {
		v.Checks[p.opts.Name] = CheckStatus{
			State:    p.st.state,
			Required: p.opts.Required,
			Probe:    true,
			Latency:  p.st.latency,
			Error:    p.st.err,
			Since:    p.st.since,
		}
	}
	for i, e := range *list {
		st := normalizeExternal(res[i].State)
		seen, ok := m.extSeen[e.name]
		if !ok || seen.state != st {
			seen = extSeen{state: st, since: now}
			m.extSeen[e.name] = seen
		}
		v.Checks[e.name] = CheckStatus{
			State:    st,
			Required: res[i].Required,
			Error:    res[i].Error,
			Since:    seen.since,
		}
	}

	// Step 2: decide.
	for _, c := range v.Checks {
		switch {
		case c.Required && c.State == StateDown:
			v.Status = StatusDown
		case c.State != StateUp && v.Status == StatusOK:
			v.Status = StatusDegraded
		}
	}

	// Step 3: encode everything but the uptime.
	s := &snapshot{verdict: v, code: v.HTTPStatus(), extList: list, ext: res}
	s.head, s.tail = encode(v, m.version)
	m.cache.Store(s)
	return s
}

// normalizeExternal maps what a registered check said to up, degraded or
// down; anything unknown is degraded.
func normalizeExternal(s State) State {
	switch s {
	case StateUp, StateDown:
		return s
	default:
		return StateDegraded
	}
}

// encode renders v around the uptime value.
func encode(v Verdict, version string) (head, tail []byte) {
	checks := make(map[string]checkJSON, len(v.Checks))
	for name, c := range v.Checks {
		j := checkJSON{
			State:    c.State,
			Required: c.Required,
			Error:    c.Error,
			Since:    c.Since.UTC().Format(time.RFC3339),
		}
		if c.Probe {
			ms := c.Latency.Round(time.Millisecond).Milliseconds()
			j.LatencyMS = &ms
		}
		checks[name] = j
	}

	// Marshalling strings and this map cannot fail.
	status, _ := json.Marshal(v.Status)
	ver, _ := json.Marshal(version)
	body, _ := json.Marshal(checks)

	head = append([]byte(`{"status":`), status...)
	head = append(head, `,"version":`...)
	head = append(head, ver...)
	head = append(head, `,"uptime":`...)
	tail = append([]byte(`,"checks":`), body...)
	tail = append(tail, "}\n"...)
	return head, tail
}
