package e2etest

import (
	"net"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; prefer letting
// the program bind port 0 and report its address.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Eventually calls check every interval until it returns true or timeout
// has passed, then fails t with the last message check returned. It is
// the only way these tests wait for a state change: no fixed sleeps.
func Eventually(t testing.TB, timeout, interval time.Duration,
	check func() (ok bool, msg string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %s", timeout, msg)
		}
		time.Sleep(interval)
	}
}
