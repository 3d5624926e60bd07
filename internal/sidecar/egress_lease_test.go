package sidecar

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
)

// This file tests the leased key pool's wiring: the service token it
// sends follows a reload, and it stops with the sidecar.

// leaseRig is an egressRig whose service token is the first auth token
// (automation.platform_token is unset), so a reload of auth.tokens
// rotates it. extra and env rebuild its configuration for a reload.
type leaseRig struct {
	*egressRig
	extra string
	env   []string
}

// newLeaseRig builds the fakes and a sidecar leasing keys with testToken;
// the platform holds one key, leased for ttl.
func newLeaseRig(t *testing.T, key string, ttl time.Duration) *leaseRig {
	t.Helper()
	plat := fakeplatform.New(fakeplatform.Options{})
	plat.AddAutomation(rigAutomationID, testToken)
	plat.AddKey(fakeplatform.Key{ID: 31, AutomationID: rigAutomationID, APIKey: key, TTL: ttl})
	platSrv := httptest.NewServer(plat.Handler())
	t.Cleanup(platSrv.Close)
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{key}})
	up := httptest.NewServer(fake.Handler())
	t.Cleanup(up.Close)

	r := &leaseRig{
		extra: fmt.Sprintf(leasedTOML, up.URL, filepath.Join(t.TempDir(), "outbox.db")),
		env: []string{
			"ZIMMER_SIDECAR_AUTOMATION__ID=" + strconv.Itoa(rigAutomationID),
			"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_URL=" + platSrv.URL,
		},
	}
	h := newHarness(t, params{extra: r.extra, env: r.env})
	r.egressRig = &egressRig{harness: h, plat: plat, fake: fake}
	return r
}

// chat makes one egress call and checks its status.
func (r *leaseRig) chat(step string, want int) {
	r.t.Helper()
	a := r.do("POST", r.egressURL("/v1/chat/completions"), chatBody(2, false), nil)
	if a.status != want {
		r.t.Fatalf("%s: got %d %s, want %d", step, a.status, a.body, want)
	}
}

// TestEgressLeasesFollowTokenRotation: after a reload rotates the service
// token (and the platform drops the old one), the next lease request
// sends the new token, so calls go on once the first lease expired.
func TestEgressLeasesFollowTokenRotation(t *testing.T) {
	t.Parallel()
	const (
		key = "sk-lease-rot-4c1e8a7f20b9d3e6"
		ttl = 2 * time.Second
	)
	r := newLeaseRig(t, key, ttl)
	r.run()
	r.waitReady()
	r.chat("first call", http.StatusOK)
	exp := r.leaseExpiry(31, ttl)

	// The operator rotates the token on both sides.
	r.plat.AddAutomation(rigAutomationID, rotatedToken)
	r.reload(r.next(params{token: rotatedToken, extra: r.extra, env: r.env}))
	reloaded := time.Now()
	sleepUntil(exp)
	r.chat("after the first lease expired", http.StatusOK)
	leases := r.plat.Leases()
	if last := leases[len(leases)-1]; len(leases) < 2 || last.At.Before(reloaded) {
		t.Fatalf("leases %+v, want a new one after the rotation", leases)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	noSecretIn(t, "the log", r.logs.String(), key, testToken, rotatedToken)
}

// TestEgressLeasedPoolClosesWithTheSidecar: once the sidecar is closed,
// its leased pool hands out no key and asks the platform for none, though
// it still holds a valid lease.
func TestEgressLeasedPoolClosesWithTheSidecar(t *testing.T) {
	t.Parallel()
	r := newLeaseRig(t, "sk-lease-close-8e2d5b1f7c4a09e3", time.Minute)
	r.run()
	r.waitReady()
	r.chat("a call", http.StatusOK)
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := r.sc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	calls := r.plat.Calls(fakeplatform.EndpointLease)
	_, err := r.sc.egress.pool.Acquire(t.Context(), "gpt-4o-mini", 0)
	if !errors.Is(err, keys.ErrClosed) {
		t.Fatalf("Acquire after Close: got %v, want keys.ErrClosed", err)
	}
	if n := r.plat.Calls(fakeplatform.EndpointLease); n != calls {
		t.Fatalf("lease calls after Close: got %d, want %d", n, calls)
	}
}
