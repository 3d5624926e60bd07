package config

import "testing"

// TestRequestRateKeys checks listen.requests_per_second and listen.burst:
// off by default, set from the file or the environment, never negative.
func TestRequestRateKeys(t *testing.T) {
	t.Parallel()
	d := mustParse(t, base)
	if d.Listen.RequestsPerSecond != 0 || d.Listen.Burst != 0 {
		t.Errorf("defaults: got %d/s burst %d, want 0 and 0 (off)",
			d.Listen.RequestsPerSecond, d.Listen.Burst)
	}

	c := mustParse(t, base+"[listen]\nrequests_per_second = 20\nburst = 40\n",
		"ZIMMER_SIDECAR_LISTEN__BURST=60")
	if c.Listen.RequestsPerSecond != 20 || c.Listen.Burst != 60 {
		t.Errorf("got %d/s burst %d, want 20/s burst 60 (burst from the environment)",
			c.Listen.RequestsPerSecond, c.Listen.Burst)
	}

	tests := []struct {
		name, doc, path, want string
	}{
		{"negative rate", "[listen]\nrequests_per_second = -1\n",
			"listen.requests_per_second", "must be at least 0"},
		{"negative burst", "[listen]\nburst = -3\n", "listen.burst", "must be at least 0"},
		{"fractional rate", "[listen]\nrequests_per_second = 0.5\n",
			"listen.requests_per_second", "must be a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblem(t, onlyProblem(t, base+tt.doc), tt.path, 4, tt.want)
		})
	}
}
