package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

// testKeys are realistic, distinct keys; index i is static key id i+1.
var testKeys = []string{
	"sk-proj-AAAAaaaa1111bbbb2222cccc3333dddd4444",
	"sk-proj-BBBBeeee5555ffff6666gggg7777hhhh8888",
	"sk-proj-CCCCiiii9999jjjj0000kkkkLLLLmmmmNNNN",
}

// fakeSink is a Sink that fails the test on a second Enqueue of one id.
type fakeSink struct {
	t    *testing.T
	mu   sync.Mutex
	recs []outbox.Record
	full bool
	err  error
}

var _ Sink = (*fakeSink)(nil)

func (s *fakeSink) Enqueue(_ context.Context, r outbox.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.recs {
		if old.ID == r.ID {
			s.t.Errorf("second Enqueue of call %s", r.ID)
		}
	}
	if s.err != nil {
		return s.err
	}
	s.recs = append(s.recs, r)
	return nil
}

func (s *fakeSink) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.full
}

func (s *fakeSink) setFull(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.full = v
}

func (s *fakeSink) records() []outbox.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]outbox.Record(nil), s.recs...)
}

// only returns the one record, failing the test when there is not
// exactly one.
func (s *fakeSink) only(t *testing.T) outbox.Record {
	t.Helper()
	recs := s.records()
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1: %+v", len(recs), recs)
	}
	return recs[0]
}

// hold is one reservation of fakeBudget.
type hold struct {
	user     int64
	reserved int64
	state    string // "held", "settled", "released"
	settled  int64
	settles  int
	releases int
}

// fakeBudget enforces the Budget contract: one Reserve per id, Settle or
// Release once per hold, balances never negative.
type fakeBudget struct {
	t        *testing.T
	mu       sync.Mutex
	balances map[int64]int64
	holds    map[string]*hold
	err      error // returned by Reserve
	// maxUnits, when positive, bounds one Reserve as the ledger does
	// (metering.ErrInvalidUnits beyond).
	maxUnits int64
}

var _ Budget = (*fakeBudget)(nil)

func newBudget(t *testing.T, balances map[int64]int64) *fakeBudget {
	return &fakeBudget{t: t, balances: balances, holds: map[string]*hold{}}
}

func (b *fakeBudget) Reserve(_ context.Context, user int64, id string, units int64) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return false, b.err
	}
	if _, dup := b.holds[id]; dup {
		b.t.Errorf("second Reserve of call %s", id)
	}
	if b.maxUnits > 0 && units > b.maxUnits {
		return false, fmt.Errorf("fake budget: %w", metering.ErrInvalidUnits)
	}
	bal, ok := b.balances[user]
	if !ok {
		return false, fmt.Errorf("fake budget: %w", metering.ErrUnknownAccount)
	}
	if units <= 0 {
		b.t.Errorf("Reserve of %d units", units)
	}
	if bal < units {
		return false, nil
	}
	b.balances[user] = bal - units
	b.holds[id] = &hold{user: user, reserved: units, state: "held"}
	return true, nil
}

func (b *fakeBudget) Settle(_ context.Context, user int64, id string, units int64) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h, ok := b.holds[id]
	if !ok || h.user != user {
		b.t.Errorf("Settle of unknown call %s", id)
		return 0, errors.New("unknown debit")
	}
	h.settles++
	if h.state != "held" {
		b.t.Errorf("Settle of call %s in state %s", id, h.state)
		return h.settled, nil
	}
	extra := units - h.reserved
	charged := units
	if extra > 0 {
		take := min(extra, b.balances[user])
		b.balances[user] -= take
		charged = h.reserved + take
	} else {
		b.balances[user] -= extra
	}
	h.state, h.settled = "settled", charged
	return charged, nil
}

func (b *fakeBudget) Release(_ context.Context, user int64, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	h, ok := b.holds[id]
	if !ok {
		return errors.New("unknown debit")
	}
	h.releases++
	if h.state != "held" {
		b.t.Errorf("Release of call %s in state %s", id, h.state)
		return nil
	}
	b.balances[user] += h.reserved
	h.state = "released"
	return nil
}

func (b *fakeBudget) hold(id string) hold {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h, ok := b.holds[id]; ok {
		return *h
	}
	return hold{}
}

func (b *fakeBudget) balance(user int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.balances[user]
}

// lockedBuffer collects log output safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventLog collects key events.
type eventLog struct {
	mu     sync.Mutex
	events []keys.Event
}

func (l *eventLog) add(e keys.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) all() []keys.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]keys.Event(nil), l.events...)
}

// countMetrics counts what the handler measures.
type countMetrics struct {
	mu      sync.Mutex
	calls   map[string]int
	retries map[string]int
	tokens  map[string]int
	lost    int
	short   int64
}

var _ Metrics = (*countMetrics)(nil)

func newCountMetrics() *countMetrics {
	return &countMetrics{
		calls:   map[string]int{},
		retries: map[string]int{},
		tokens:  map[string]int{},
	}
}

func (m *countMetrics) EgressCall(outcome string, status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[fmt.Sprintf("%s/%d", outcome, status)]++
}

func (m *countMetrics) EgressRetry(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retries[reason]++
}

func (m *countMetrics) Tokens(model string, prompt, completion int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[model] += prompt + completion
}

func (m *countMetrics) EgressRecordLost() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lost++
}

func (m *countMetrics) EgressShortfall(units int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.short += units
}

func (m *countMetrics) shortfall() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.short
}

func (m *countMetrics) snapshot() (calls, retries, tokens map[string]int, lost int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := func(in map[string]int) map[string]int {
		out := make(map[string]int, len(in))
		for k, v := range in {
			out[k] = v
		}
		return out
	}
	return cp(m.calls), cp(m.retries), cp(m.tokens), m.lost
}

// env is one handler under test behind a loopback server, with its
// fakes.
type env struct {
	t       *testing.T
	h       *Handler
	srv     *httptest.Server
	sink    *fakeSink
	pool    *keys.Static
	events  *eventLog
	logs    *lockedBuffer
	metrics *countMetrics
	clock   *testclock.Clock
}

// newEnv builds a handler forwarding to upstream with the first nKeys
// test keys. edit may change the options before New.
func newEnv(t *testing.T, upstream string, nKeys int, edit func(*Options)) *env {
	t.Helper()
	e := &env{
		t:       t,
		sink:    &fakeSink{t: t},
		events:  &eventLog{},
		logs:    &lockedBuffer{},
		metrics: newCountMetrics(),
		clock:   testclock.New(time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)),
	}
	sk := make([]keys.StaticKey, nKeys)
	for i := range sk {
		sk[i] = keys.StaticKey{
			Source: fmt.Sprintf("test:%d", i+1),
			Key:    keys.NewSecret(testKeys[i]),
		}
	}
	pool, err := keys.NewStatic(sk, keys.Options{Now: e.clock.Now, OnEvent: e.events.add})
	if err != nil {
		t.Fatal(err)
	}
	e.pool = pool
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := Options{
		Upstream:  u,
		Pool:      pool,
		Sink:      e.sink,
		Logger:    logger,
		Metrics:   e.metrics,
		Now:       e.clock.Now,
		Transport: &http.Transport{},
	}
	if edit != nil {
		edit(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() { opts.Transport.(*http.Transport).CloseIdleConnections() })
	return e
}

// do sends a request to the egress and returns the answer with its body
// read.
func (e *env) do(method, path, body string, hdr http.Header) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path,
		strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read answer: %v", err)
	}
	return resp, string(b)
}

// wait waits for every finalisation.
func (e *env) wait() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	if err := e.h.Wait(ctx); err != nil {
		e.t.Fatalf("wait: %v", err)
	}
}

// upstreamLog records what reached a fake upstream.
type upstreamLog struct {
	mu   sync.Mutex
	reqs []seenRequest
}

type seenRequest struct {
	Method string
	Host   string
	URI    string
	Header http.Header
	Body   string
}

func (l *upstreamLog) add(r *http.Request) seenRequest {
	b, _ := io.ReadAll(r.Body)
	s := seenRequest{
		Method: r.Method, Host: r.Host, URI: r.RequestURI,
		Header: r.Header.Clone(), Body: string(b),
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, s)
	return s
}

func (l *upstreamLog) all() []seenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenRequest(nil), l.reqs...)
}

// bearerKey returns the key a request carried.
func bearerKey(h http.Header) string {
	if k := h.Get("Api-Key"); k != "" {
		return k
	}
	return strings.TrimPrefix(h.Get("Authorization"), "Bearer ")
}

// newUpstream starts a loopback upstream running fn after logging the
// request.
func newUpstream(t *testing.T, fn func(w http.ResponseWriter, r *http.Request, s seenRequest)) (
	*httptest.Server, *upstreamLog) {
	t.Helper()
	log := &upstreamLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := log.add(r)
		fn(w, r, s)
	}))
	t.Cleanup(srv.Close)
	return srv, log
}

// writeJSONAnswer answers v as JSON.
func writeJSONAnswer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// chatAnswer is a chat completion with usage.
func chatAnswer(prompt, completion int) map[string]any {
	return map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{
			"role": "assistant", "content": "hi"}, "finish_reason": "stop"}},
		"usage": map[string]any{"prompt_tokens": prompt, "completion_tokens": completion,
			"total_tokens": prompt + completion},
	}
}

// openAIError is an OpenAI error body.
func openAIError(msg, typ, code string) map[string]any {
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code}}
}

// flush flushes an upstream's answer.
func flush(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
}

// decodeError reads the handler's own error body.
func decodeError(t *testing.T, body string) wireError {
	t.Helper()
	var e wireError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error.Message == "" || e.Error.Type == "" || e.Error.Code == "" {
		t.Fatalf("error body %q: want message, type and code", body)
	}
	return e
}

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
