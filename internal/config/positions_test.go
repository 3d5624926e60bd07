package config

import (
	"testing"
)

func TestIndexLines(t *testing.T) {
	t.Parallel()
	doc := `top = 1
[a]
b.c = 2
"q.k" = 3
d = { e = 4, f = [
  { g = 5 },
  6,
] }

[[r]]
x = 1
[r.sub]
y = 2
[[r]]
x = 3
[[r.list]]
z = 4
[[r.list]]
z = 5
`
	want := map[string]int{
		"top":            1,
		"a":              2,
		"a.b":            3,
		"a.b.c":          3,
		`a."q.k"`:        4,
		"a.d":            5,
		"a.d.e":          5,
		"a.d.f":          5,
		"a.d.f[0]":       6,
		"a.d.f[0].g":     6,
		"a.d.f[1]":       7,
		"r":              10,
		"r[0]":           10,
		"r[0].x":         11,
		"r[0].sub":       12,
		"r[0].sub.y":     13,
		"r[1]":           14,
		"r[1].x":         15,
		"r[1].list[0]":   16,
		"r[1].list[0].z": 17,
		"r[1].list[1]":   18,
		"r[1].list[1].z": 19,
	}
	got := indexLines([]byte(doc))
	for p, line := range want {
		if got[p] != line {
			t.Errorf("%s: got line %d, want %d", p, got[p], line)
		}
	}
	if l := got.lineOf("r[1].list[1].missing"); l != 18 {
		t.Errorf("lineOf a missing key: got %d, want its table's line 18", l)
	}
	if l := got.lineOf("nowhere.at.all"); l != 0 {
		t.Errorf("lineOf an absent path: got %d, want 0", l)
	}
}

// TestInlineArrayOfTables checks lines for entries written as an inline
// array rather than [[route]] headers.
func TestInlineArrayOfTables(t *testing.T) {
	t.Parallel()
	doc := "route = [\n  { path = \"/a\" },\n  { path = \"b\" },\n]\n" + base
	p := onlyProblem(t, doc)
	checkProblem(t, p, "route[1].path", 3, `must start with "/"`)
}
