package forward

import (
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

func TestLeafFor(t *testing.T) {
	ca, _ := newTestCA(t)
	tests := []struct {
		name, host, want string
	}{
		{name: "dns name", host: "api.openai.com", want: "api.openai.com"},
		{name: "case and trailing dot", host: "API.OpenAI.com.", want: "api.openai.com"},
		{name: "ipv4", host: "127.0.0.1", want: "127.0.0.1"},
		{name: "ipv6 in brackets", host: "[::1]", want: "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.LeafFor(tt.host)
			if err != nil {
				t.Fatal(err)
			}
			c := leaf.Leaf
			if c.Subject.CommonName != tt.want {
				t.Errorf("common name: got %q, want %q", c.Subject.CommonName, tt.want)
			}
			if ip := net.ParseIP(tt.want); ip != nil {
				if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(ip) ||
					len(c.DNSNames) != 0 {
					t.Errorf("SANs: got %v %v, want only IP %s", c.DNSNames, c.IPAddresses, ip)
				}
			} else if len(c.DNSNames) != 1 || c.DNSNames[0] != tt.want ||
				len(c.IPAddresses) != 0 {
				t.Errorf("SANs: got %v %v, want only %s", c.DNSNames, c.IPAddresses, tt.want)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			if life := c.NotAfter.Sub(c.NotBefore); life > leafValidity+clockSkew {
				t.Errorf("validity: got %v, want at most %v", life, leafValidity+clockSkew)
			}
			verifyLeaf(t, ca, c, tt.want)
		})
	}
}

func TestLeafForRefusesBadHosts(t *testing.T) {
	ca, _ := newTestCA(t)
	for _, host := range []string{"", "api.openai.com:443", "a b", "x/y", "fe80::1%eth0"} {
		if _, err := ca.LeafFor(host); err == nil {
			t.Errorf("LeafFor(%q): got no error", host)
		}
	}
	if got := ca.minted.Load(); got != 0 {
		t.Errorf("minted: got %d, want 0", got)
	}
}

func TestLeafCache(t *testing.T) {
	ca, _ := newTestCA(t)
	clock := testclock.New(time.Now())
	ca.now = clock.Now

	a1, err := ca.LeafFor("a.example")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := ca.LeafFor("A.example")
	if err != nil {
		t.Fatal(err)
	}
	if a1 != a2 {
		t.Error("second call for the same host minted again, want the cached leaf")
	}
	if _, err := ca.LeafFor("b.example"); err != nil {
		t.Fatal(err)
	}
	if got := ca.minted.Load(); got != 2 {
		t.Fatalf("minted: got %d, want 2 (one per host)", got)
	}

	// Past half its validity the leaf is replaced by one valid from now.
	clock.Advance(leafValidity/2 + time.Minute)
	a3, err := ca.LeafFor("a.example")
	if err != nil {
		t.Fatal(err)
	}
	if a3 == a1 {
		t.Fatal("leaf past half its validity: got the cached one, want a new one")
	}
	if !a3.Leaf.NotAfter.After(a1.Leaf.NotAfter) {
		t.Errorf("renewed leaf ends %v, want after %v", a3.Leaf.NotAfter, a1.Leaf.NotAfter)
	}
}

func TestLeafNeverOutlivesCA(t *testing.T) {
	ca, _ := newTestCA(t)
	clock := testclock.New(ca.Certificate().NotAfter.Add(-time.Hour))
	ca.now = clock.Now
	leaf, err := ca.LeafFor("a.example")
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("leaf ends %v, want the CA's end %v", leaf.Leaf.NotAfter,
			ca.Certificate().NotAfter)
	}

	clock.Advance(2 * time.Hour)
	if _, err := ca.LeafFor("b.example"); err == nil {
		t.Error("minting with an expired CA: got no error")
	}
}

func TestLeafMintedOnceUnderConcurrency(t *testing.T) {
	ca, _ := newTestCA(t)
	const callers = 64
	leaves := make([]*x509.Certificate, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			leaf, err := ca.LeafFor("api.openai.com")
			if err != nil {
				t.Error(err)
				return
			}
			leaves[i] = leaf.Leaf
		})
	}
	close(start)
	wg.Wait()
	if got := ca.minted.Load(); got != 1 {
		t.Errorf("minted: got %d, want 1", got)
	}
	for i, l := range leaves {
		if l != leaves[0] {
			t.Fatalf("caller %d got another leaf, want the one minted", i)
		}
	}
}

func BenchmarkLeafForCached(b *testing.B) {
	dir := b.TempDir()
	ca, err := LoadOrCreateCA(dir+"/ca.pem", dir+"/ca-key.pem")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ca.LeafFor("api.openai.com"); err != nil {
			b.Fatal(err)
		}
	}
}
