package sidecar

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// This file holds the rig of the egress tests that involve the platform:
// a fake platform and a fake OpenAI upstream, both on loopback, and a
// sidecar configured to use them.

// rigAutomationID is the automation the fake platform knows the sidecar as.
const rigAutomationID = 5

// rigPlatformToken is the service token the sidecar sends the platform.
const rigPlatformToken = "zs-platform-token-0c6e2a9f41d87b35"

// rigUser is the user_automation_id the tests charge.
const rigUser = 42

// egressRig is a sidecar between a fake platform and a fake upstream.
type egressRig struct {
	*harness
	plat *fakeplatform.Platform
	fake *fakeopenai.Server
}

// rigConfig shapes an egressRig.
type rigConfig struct {
	// egress is the [egress] TOML; %[1]q is the upstream's URL and
	// %[2]q the outbox path.
	egress   string
	platform fakeplatform.Options
	fake     fakeopenai.Options
	env      []string
}

// newEgressRig builds the fakes and the sidecar, which knows the platform
// through the environment overrides of automation.id, platform_url and
// platform_token. Nothing runs yet: call run (after fastDelivery, if
// wanted).
func newEgressRig(t *testing.T, rc rigConfig) *egressRig {
	t.Helper()
	plat := fakeplatform.New(rc.platform)
	plat.AddAutomation(rigAutomationID, rigPlatformToken)
	platSrv := httptest.NewServer(plat.Handler())
	t.Cleanup(platSrv.Close)
	fake := fakeopenai.New(rc.fake)
	up := httptest.NewServer(fake.Handler())
	t.Cleanup(up.Close)

	env := append([]string{
		"ZIMMER_SIDECAR_AUTOMATION__ID=" + strconv.Itoa(rigAutomationID),
		"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_URL=" + platSrv.URL,
		"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_TOKEN=env:ZS_PLATFORM_TOKEN",
		"ZS_PLATFORM_TOKEN=" + rigPlatformToken,
	}, rc.env...)
	h := newHarness(t, params{
		extra: fmt.Sprintf(rc.egress, up.URL, filepath.Join(t.TempDir(), "outbox.db")),
		env:   env,
	})
	return &egressRig{harness: h, plat: plat, fake: fake}
}

// fastDelivery replaces the sidecar's outbox deliverer, before Run starts
// it, with one built from the same options but retrying within
// milliseconds. The configuration has no knob for the deliverer's
// backoff (1s doubling to 5m), breaker (30s open after 5 failures) or
// poll interval (1s), so an outage test on the defaults would wait
// minutes between the faults it means to exercise.
func fastDelivery(t *testing.T, h *harness) {
	t.Helper()
	e := h.sc.egress
	if e == nil || e.deliver == nil {
		t.Fatal("the sidecar has no outbox deliverer")
	}
	o := h.sc.deliverOptions(h.cfg, e)
	o.CallTimeout = 2 * time.Second
	o.BackoffMin = 5 * time.Millisecond
	o.BackoffMax = 100 * time.Millisecond
	o.PollInterval = 10 * time.Millisecond
	o.BreakerOpenFor = 50 * time.Millisecond
	d, err := outbox.NewDeliverer(e.box, o)
	if err != nil {
		t.Fatalf("fast deliverer: %v", err)
	}
	e.deliver = d
}

// egressURL is the base-URL listener's URL for path.
func (h *harness) egressURL(path string) string {
	return "http://" + h.sc.EgressAddr() + path
}

// chatBody is a chat completion request whose message has words words.
func chatBody(words int, stream bool) string {
	content := strings.TrimSpace(strings.Repeat("hi ", words))
	return fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%t,`+
		`"messages":[{"role":"user","content":%q}]}`, stream, content)
}

// chatUsage is the usage of a chat completion answer.
type chatUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// usageOf reads the usage of a JSON chat completion answer.
func usageOf(body string) (chatUsage, error) {
	var a struct {
		Usage *chatUsage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		return chatUsage{}, fmt.Errorf("answer is not JSON: %w", err)
	}
	if a.Usage == nil {
		return chatUsage{}, fmt.Errorf("answer has no usage: %s", body)
	}
	return *a.Usage, nil
}

// userHeader names rigUser on an egress call, with more name/value pairs.
func userHeader(kv ...string) http.Header {
	h := http.Header{"X-Zimmer-User-Automation-Id": {strconv.Itoa(rigUser)}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// outboxView is the admin /outbox answer.
type outboxView struct {
	Stats outbox.Stats  `json:"stats"`
	Items []outbox.Item `json:"items"`
}

// outboxList reads the admin /outbox list with query (e.g. "?state=unknown").
func (h *harness) outboxList(query string) outboxView {
	h.t.Helper()
	a := h.do("GET", h.adminURL()+"/outbox"+query, "", nil)
	if a.status != http.StatusOK {
		h.t.Fatalf("admin /outbox%s: %d %s", query, a.status, a.body)
	}
	var v outboxView
	if err := json.Unmarshal([]byte(a.body), &v); err != nil {
		h.t.Fatalf("admin /outbox%s: %v in %s", query, err, a.body)
	}
	return v
}

// provision creates user with demo tokens in the sidecar's ledger.
func (h *harness) provision(user, demo int64) {
	h.t.Helper()
	body := fmt.Sprintf(`{"user_automation_id": %d, "user_id": 1, "demo_tokens": %d}`,
		user, demo)
	a := h.do("POST", h.publicURL()+"/provision", body, withToken(testToken))
	if a.status != http.StatusOK {
		h.t.Fatalf("provision %d: %d %s", user, a.status, a.body)
	}
}

// journalOf returns the ledger entries of user, by kind.
func (h *harness) journalOf(user int64) map[metering.EntryKind][]metering.Entry {
	h.t.Helper()
	out := map[metering.EntryKind][]metering.Entry{}
	err := h.sc.ledger.Journal(h.t.Context(), 0, 0, func(e metering.Entry) error {
		if e.UserAutomationID == user {
			out[e.Kind] = append(out[e.Kind], e)
		}
		return nil
	})
	if err != nil {
		h.t.Fatalf("journal: %v", err)
	}
	return out
}

// waitFor polls cond every 10ms until it holds, failing t after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sleepUntil sleeps until just after at.
func sleepUntil(at time.Time) {
	time.Sleep(time.Until(at) + 50*time.Millisecond)
}

// noSecretIn fails t when text holds one of secrets, or a 12-character
// run of one.
func noSecretIn(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for i := 0; i+12 <= len(s); i += 4 {
			if strings.Contains(text, s[i:i+12]) {
				t.Errorf("%s holds a secret's characters %d..%d", where, i, i+12)
				break
			}
		}
	}
}
