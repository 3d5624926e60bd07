package main

import (
	"strings"
	"testing"
)

// TestRefusesNonLoopback: the fake never listens beyond loopback.
func TestRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "example.com:0"} {
		err := run([]string{"-addr", addr})
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("-addr %s: got %v, want a loopback refusal", addr, err)
		}
	}
	if err := run([]string{"-key", ""}); err == nil {
		t.Error("an empty key was accepted")
	}
}
