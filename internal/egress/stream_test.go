package egress

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
)

const (
	sseChunk = `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"delta":{"content":"w"}}]}` + "\n\n"
	sseUsage = `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini",` +
		`"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}` +
		"\n\n"
	sseDone    = "data: [DONE]\n\n"
	streamBody = `{"model":"gpt-4o-mini","stream":true,"messages":[]}`
)

// asksUsage reports whether an upstream request body asks for usage.
func asksUsage(t *testing.T, body string) bool {
	t.Helper()
	var req struct {
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Errorf("upstream body %q: %v", body, err)
		return false
	}
	return req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}

// startStream sends an event stream's headers.
func startStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	flush(w)
}

// openStream sends a streamed request and returns the answer, its body
// unread, and a cancel that makes the app go away.
func (e *env) openStream(body string, hdr http.Header) (*http.Response, context.CancelFunc) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.t.Context())
	req, err := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions",
		strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp, cancel
}

// readUntil reads from r until the text read ends with suffix, failing
// the test when that takes more than 5 seconds (the upstream is then
// waiting for the test: the egress held bytes back).
func readUntil(t *testing.T, r *bufio.Reader, suffix string) string {
	t.Helper()
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var b strings.Builder
		for !strings.HasSuffix(b.String(), suffix) {
			c, err := r.ReadByte()
			if err != nil {
				ch <- result{b.String(), err}
				return
			}
			b.WriteByte(c)
		}
		ch <- result{b.String(), nil}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("read %q, then %v; want it to end with %q", res.s, res.err, suffix)
		}
		return res.s
	case <-time.After(5 * time.Second):
		t.Fatalf("no %q arrived: the egress held it back", suffix)
		return ""
	}
}

// C2: the upstream is always asked for usage; the usage-only chunk
// reaches the app only when it asked for it, and is recorded either way.
func TestStreamUsageOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		wantChunk bool
	}{
		{"no stream_options", streamBody, false},
		{"include_usage false",
			`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false}}`,
			false},
		{"include_usage true",
			`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, s seenRequest) {
				startStream(w)
				_, _ = io.WriteString(w, sseChunk+sseChunk)
				if asksUsage(t, s.Body) {
					_, _ = io.WriteString(w, sseUsage)
				}
				_, _ = io.WriteString(w, sseDone)
			})
			e := newEnv(t, up.URL, 1, nil)
			resp, body := e.do("POST", "/v1/chat/completions", tt.body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !asksUsage(t, seen.all()[0].Body) {
				t.Errorf("the upstream was not asked for usage: %s", seen.all()[0].Body)
			}
			want := sseChunk + sseChunk + sseDone
			if tt.wantChunk {
				want = sseChunk + sseChunk + sseUsage + sseDone
			}
			if body != want {
				t.Errorf("app got\n%q\nwant\n%q", body, want)
			}
			e.wait()
			rec := e.sink.only(t)
			if rec.TotalTokens != 12 || rec.PromptTokens != 5 || !rec.UsageKnown || !rec.Success {
				t.Errorf("record %+v, want 5+7=12 tokens, success", rec)
			}
		})
	}
}

// C1: a usage event split across upstream writes is framed whole.
func TestStreamUsageSplitAcrossReads(t *testing.T) {
	t.Parallel()
	crlf := strings.ReplaceAll(sseUsage, "\n", "\r\n")
	tests := []struct {
		name       string
		first      string
		rest       string
		appAsked   bool
		beforeDone string // what the app sees before [DONE]
	}{
		{"inside the JSON", sseUsage[:60], sseUsage[60:], true, sseUsage},
		{"inside data:", "da", sseUsage[2:], true, sseUsage},
		{"between the line ends", sseUsage[:len(sseUsage)-1], "\n", true, sseUsage},
		{"between CR and LF", crlf[:len(crlf)-1], "\n", true, crlf},
		{"stripped, inside the JSON", sseUsage[:60], sseUsage[60:], false, ""},
		{"stripped, between CR and LF", crlf[:len(crlf)-1], "\n", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
				startStream(w)
				_, _ = io.WriteString(w, sseChunk+tt.first)
				flush(w)
				select {
				case <-release:
				case <-time.After(50 * time.Millisecond):
					// The stripped variants cannot see the first
					// part arrive: it is held until its event ends.
				}
				_, _ = io.WriteString(w, tt.rest+sseDone)
			})
			e := newEnv(t, up.URL, 1, nil)
			body := streamBody
			if tt.appAsked {
				body = `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`
			}
			resp, _ := e.openStream(body, nil)
			br := bufio.NewReader(resp.Body)
			got := readUntil(t, br, sseChunk)
			if tt.appAsked {
				got += readUntil(t, br, tt.first)
			}
			close(release)
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			got += string(rest)
			if want := sseChunk + tt.beforeDone + sseDone; got != want {
				t.Errorf("app got %q, want %q", got, want)
			}
			e.wait()
			if rec := e.sink.only(t); rec.TotalTokens != 12 || !rec.UsageKnown {
				t.Errorf("record %+v, want 12 tokens", rec)
			}
		})
	}
}

// The first event reaches the app before the upstream sends the second.
func TestStreamFirstEventNotHeldBack(t *testing.T) {
	t.Parallel()
	for _, appAsked := range []bool{false, true} {
		t.Run(map[bool]string{false: "stripping", true: "passing"}[appAsked], func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
				startStream(w)
				_, _ = io.WriteString(w, sseChunk)
				flush(w)
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				_, _ = io.WriteString(w, sseChunk+sseUsage+sseDone)
			})
			e := newEnv(t, up.URL, 1, nil)
			body := streamBody
			if appAsked {
				body = `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`
			}
			resp, _ := e.openStream(body, nil)
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			br := bufio.NewReader(resp.Body)
			if got := readUntil(t, br, "\n\n"); got != sseChunk {
				t.Fatalf("first event %q, want %q", got, sseChunk)
			}
			close(release)
			if _, err := io.ReadAll(br); err != nil {
				t.Fatal(err)
			}
			e.wait()
			if rec := e.sink.only(t); rec.TotalTokens != 12 || rec.Exit != outbox.ExitComplete {
				t.Errorf("record %+v", rec)
			}
		})
	}
}

// An app that goes away mid-stream is charged exactly once, for the
// whole usage, read by draining the upstream.
func TestAppGoneMidStreamDrains(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	up, seen := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		startStream(w)
		_, _ = io.WriteString(w, sseChunk)
		flush(w)
		select {
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Error("the egress never noticed the app leaving")
		}
		// Far more than one read of the egress: the usage comes only
		// after the app is gone and must be drained.
		for range 2000 {
			_, _ = io.WriteString(w, sseChunk)
		}
		_, _ = io.WriteString(w, sseUsage+sseDone)
	})
	budget := newBudget(t, map[int64]int64{7: 100000})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	e.h.onAppGone = func() { close(gone) }

	resp, cancel := e.openStream(streamBody, http.Header{DefaultUserHeader: {"7"}})
	readUntil(t, bufio.NewReader(resp.Body), sseChunk)
	cancel()
	e.wait()

	rec := e.sink.only(t)
	if rec.Exit != outbox.ExitClientGone || rec.TotalTokens != 12 || !rec.UsageKnown ||
		!rec.Success {
		t.Errorf("record %+v: want client_gone with the full usage (12 tokens)", rec)
	}
	if rec.Units != 12 || rec.UserAutomationID != 7 {
		t.Errorf("record units %d user %d, want 12 units for user 7",
			rec.Units, rec.UserAutomationID)
	}
	h := budget.hold(rec.ID)
	if h.settles != 1 || h.releases != 0 || h.settled != 12 {
		t.Errorf("budget hold %+v: want one settle of 12 units", h)
	}
	if got := budget.balance(7); got != 100000-12 {
		t.Errorf("balance %d, want %d", got, 100000-12)
	}
	if n := len(seen.all()); n != 1 {
		t.Errorf("upstream got %d requests, want 1", n)
	}
}

// The drain after the app left is bounded in time: usage unknown, the
// call is charged its reservation.
func TestAppGoneDrainBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Options)
	}{
		{"time", func(o *Options) { o.DrainTimeout = 50 * time.Millisecond }},
		{"bytes", func(o *Options) { o.DrainBytes = 1000 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gone := make(chan struct{})
			up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
				startStream(w)
				_, _ = io.WriteString(w, sseChunk)
				flush(w)
				<-gone
				for r.Context().Err() == nil { // endless until cut
					if _, err := io.WriteString(w, sseChunk); err != nil {
						return
					}
					flush(w)
					if tt.name == "time" {
						<-r.Context().Done()
					}
				}
			})
			budget := newBudget(t, map[int64]int64{7: 100000})
			e := newEnv(t, up.URL, 1, func(o *Options) {
				o.Budget = budget
				tt.edit(o)
			})
			e.h.onAppGone = func() { close(gone) }
			resp, cancel := e.openStream(streamBody, http.Header{DefaultUserHeader: {"7"}})
			readUntil(t, bufio.NewReader(resp.Body), sseChunk)
			cancel()
			e.wait()

			rec := e.sink.only(t)
			if rec.Exit != outbox.ExitClientGone || rec.UsageKnown || rec.Success {
				t.Errorf("record %+v: want client_gone, usage unknown, no success", rec)
			}
			h := budget.hold(rec.ID)
			if h.settles != 1 || h.releases != 0 || h.settled != h.reserved ||
				h.reserved < DefaultReserveTokens {
				t.Errorf("budget hold %+v: want one settle at the reservation", h)
			}
			if rec.Units != h.reserved {
				t.Errorf("record units %d, want %d", rec.Units, h.reserved)
			}
		})
	}
}

// An app that hangs up right after the last event, before the upstream
// ended its answer (openai-go closes at "[DONE]"), got the whole answer:
// the call is complete, not client_gone. (Whether the egress sees the
// hang-up before or after the upstream's end is a race; this test takes
// the common order, TestEgressWithOpenAIGo in internal/sidecar met the
// other one.)
func TestAppGoneAfterLastEventIsComplete(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		startStream(w)
		_, _ = io.WriteString(w, sseChunk+sseUsage+sseDone)
		flush(w)
		select { // the answer ends only once the app has left
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Error("the egress never noticed the app leaving")
		}
	})
	e := newEnv(t, up.URL, 1, nil)
	e.h.onAppGone = func() { close(gone) }

	resp, cancel := e.openStream(streamBody, nil)
	readUntil(t, bufio.NewReader(resp.Body), "[DONE]")
	cancel()
	e.wait()

	if rec := e.sink.only(t); rec.Exit != outbox.ExitComplete || rec.TotalTokens != 12 {
		t.Errorf("record %+v: want complete with 12 tokens", rec)
	}
}
