//go:build race

package e2etest

// raceEnabled reports whether this test binary runs with the race
// detector; the sidecar binary is then built with it too.
const raceEnabled = true
