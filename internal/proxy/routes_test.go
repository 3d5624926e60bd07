package proxy

import (
	"reflect"
	"strings"
	"testing"
)

func TestRouteMatching(t *testing.T) {
	t.Parallel()
	routes := []Route{
		{Path: "/chat/{id}/stream", Methods: []string{"post"}},
		{Path: "/chat/*"},
		{Path: "/exact"},
		{Path: "/get-only", Methods: []string{"GET"}},
		{Path: "/u/{user}/*"},
		{Path: "/"},
	}
	var tbl table
	for _, r := range routes {
		rt, err := compileRoute(r)
		if err != nil {
			t.Fatalf("compileRoute(%q): %v", r.Path, err)
		}
		tbl = append(tbl, rt)
	}
	tests := []struct {
		method, path string
		want         string // pattern, "" for none
		params       []string
	}{
		{"POST", "/chat/7/stream", "/chat/{id}/stream", []string{"7"}},
		{"GET", "/chat/7/stream", "/chat/*", nil},
		{"GET", "/chat", "/chat/*", nil},
		{"GET", "/chat/a/b/c", "/chat/*", nil},
		{"GET", "/chatter", "", nil},
		{"GET", "/exact", "/exact", nil},
		{"GET", "/exact/more", "", nil},
		{"HEAD", "/get-only", "/get-only", nil},
		{"POST", "/get-only", "", nil},
		{"GET", "/u/5", "/u/{user}/*", []string{"5"}},
		{"GET", "/u", "", nil},
		{"GET", "/u/5/x/y", "/u/{user}/*", []string{"5"}},
		{"GET", "/", "/", nil},
		{"post", "/chat/7/stream", "/chat/{id}/stream", []string{"7"}},
		{"pOsT", "/chat/7/stream", "/chat/{id}/stream", []string{"7"}},
		{"head", "/get-only", "/get-only", nil},
		{"get", "/get-only", "/get-only", nil},
		{"post", "/get-only", "", nil},
	}
	for _, tt := range tests {
		rt, params := tbl.lookup(tt.path, tt.method)
		got := ""
		if rt != nil {
			got = rt.pattern
		}
		if got != tt.want {
			t.Errorf("lookup(%s %s): got route %q, want %q", tt.method, tt.path, got, tt.want)
			continue
		}
		if len(params) > 0 || len(tt.params) > 0 {
			if !reflect.DeepEqual(params, tt.params) {
				t.Errorf("lookup(%s %s): got params %q, want %q",
					tt.method, tt.path, params, tt.params)
			}
		}
	}
}

func TestRouteMatchesEverythingWithStar(t *testing.T) {
	t.Parallel()
	rt, err := compileRoute(Route{Path: "/*"})
	if err != nil {
		t.Fatalf("compileRoute: %v", err)
	}
	for _, p := range []string{"/", "/a", "/a/b"} {
		if _, ok := rt.match(p, nil); !ok {
			t.Errorf("/* does not match %q", p)
		}
	}
}

func TestCompileRouteErrors(t *testing.T) {
	t.Parallel()
	meter := func(user string) *Meter {
		src, err := ParseUserSource(user)
		if err != nil {
			t.Fatalf("ParseUserSource(%q): %v", user, err)
		}
		return &Meter{Units: 1, UsageType: "chat", User: src}
	}
	bad := []Route{
		{Path: "chat"},
		{Path: "/a//b"},
		{Path: "/a/../b"},
		{Path: "/a/"},
		{Path: "/a*"},
		{Path: "/a/*/b"},
		{Path: "/a/{id"},
		{Path: "/a/{id}x"},
		{Path: "/a/{id}/{id}"},
		{Path: "/a", Methods: []string{" "}},
		{Path: "/a/{id}", Meter: meter("path:user")},
		{Path: "/a", Meter: &Meter{Units: 0, UsageType: "x", User: UserSource{"header", "X"}}},
		{Path: "/a", Meter: &Meter{Units: 1, User: UserSource{"header", "X"}}},
		{Path: "/a", Meter: &Meter{Units: 1, UsageType: "x", User: UserSource{"cookie", "X"}}},
	}
	for _, r := range bad {
		if _, err := compileRoute(r); err == nil {
			t.Errorf("compileRoute(%+v): got nil error, want one", r)
		}
	}
	if _, err := compileRoute(Route{Path: "/a/{id}", Meter: meter("path:id")}); err != nil {
		t.Errorf("compileRoute with path:id: %v", err)
	}
	for _, s := range []string{"header", "header:", "cookie:x", ":x"} {
		if _, err := ParseUserSource(s); err == nil {
			t.Errorf("ParseUserSource(%q): got nil error, want one", s)
		}
	}
}

func TestCleanPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, clean, forward string
	}{
		{"", "/", "/"},
		{"/", "/", "/"},
		{"/a/../b", "/b", "/b"},
		{"/public/../secret", "/secret", "/secret"}, // what %2F decodes to
		{"/a//b/./c/", "/a/b/c", "/a/b/c/"},
		{"/../../etc", "/etc", "/etc"},
		{"a/b", "/a/b", "/a/b"},
		{"/x/", "/x", "/x/"},
	}
	for _, tt := range tests {
		clean, trailing := cleanPath(tt.in)
		fwd := forwardPath(clean, trailing)
		if clean != tt.clean || fwd != tt.forward {
			t.Errorf("cleanPath(%q): got %q -> %q, want %q -> %q",
				tt.in, clean, fwd, tt.clean, tt.forward)
		}
	}
}

// FuzzRoute checks that pattern compilation and matching never panic,
// that a cleaned path is stable and free of dot segments, and that a
// match yields one value per parameter.
func FuzzRoute(f *testing.F) {
	f.Add("/chat/{id}/stream", "/chat/7/stream")
	f.Add("/x/*", "/x/../y//z/")
	f.Add("/*", "")
	f.Add("/{a}/{b}/*", "/1/2")
	f.Add("header:X-Tenant", "a/./b")
	f.Fuzz(func(t *testing.T, pattern, reqPath string) {
		_, _ = ParseUserSource(pattern)
		_, _ = ParseCall(pattern + " " + reqPath)

		clean, trailing := cleanPath(reqPath)
		if !strings.HasPrefix(clean, "/") || strings.Contains(clean, "//") ||
			strings.Contains(clean+"/", "/../") || strings.Contains(clean+"/", "/./") {
			t.Fatalf("cleanPath(%q) = %q is not clean", reqPath, clean)
		}
		if again, _ := cleanPath(forwardPath(clean, trailing)); again != clean {
			t.Fatalf("cleanPath not stable: %q -> %q -> %q", reqPath, clean, again)
		}
		rt, err := compileRoute(Route{Path: pattern})
		if err != nil {
			return
		}
		if params, ok := rt.match(clean, nil); ok && len(params) != len(rt.params) {
			t.Fatalf("match(%q, %q): %d values for %d parameters",
				pattern, clean, len(params), len(rt.params))
		}
	})
}
