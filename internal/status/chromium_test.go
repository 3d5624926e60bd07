//go:build unix

package status

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// Screenshot geometry and the colours the test looks for in it.
const (
	shotWidth, shotHeight = 1200, 900
	chromiumTimeout       = 90 * time.Second
)

var (
	toneBad  = color.RGBA{0xcf, 0x22, 0x2e, 0xff} // .tone-bad
	cellPass = color.RGBA{0x2d, 0xa4, 0x4e, 0xff} // .r-pass
)

// findChromium returns the chromium binary, skipping the test when there
// is none, except in CI, where .ci/run installs it and its absence fails.
func findChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("headless chromium: skipped in -short mode")
	}
	bin, err := exec.LookPath("chromium")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("chromium not on PATH in CI (scripts/test.sh installs it): %v", err)
	}
	t.Skip("chromium not on PATH; install Debian's chromium package " +
		"(apt-get install chromium) to run the headless page test")
	return ""
}

// runChromium runs headless chromium with args after the common flags
// and returns its stdout. Its profile, cache and home live in dir; the
// whole process group is killed if it outlives chromiumTimeout.
func runChromium(t *testing.T, bin, dir string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), chromiumTimeout)
	defer cancel()

	home := filepath.Join(dir, "home")
	common := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
		"--no-proxy-server", "--hide-scrollbars", "--mute-audio",
		"--force-device-scale-factor=1", "--force-color-profile=srgb",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
	}
	cmd := exec.CommandContext(ctx, bin, append(common, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v (ctx: %v)\nstderr tail:\n%s",
			args[0], err, ctx.Err(), tail(stderr.String(), 2000))
	}
	return stdout.Bytes()
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestPageInChromium renders the page in headless chromium: the DOM it
// builds holds the verdict, every probe and every endpoint (the hostile
// probe name as text, not markup), and its screenshot is a real
// 1200x900 rendering with the red verdict banner and green probe cells.
func TestPageInChromium(t *testing.T) {
	bin := findChromium(t)
	c := &clock{t: t0.Add(30 * time.Minute)}
	srv := httptest.NewServer(Handler(fakeSource(t, c)))
	t.Cleanup(srv.Close)
	url := srv.URL + "/status"
	dir := t.TempDir()

	// Step 1: the DOM after chromium parsed and laid out the page.
	dom := runChromium(t, bin, filepath.Join(dir, "dom"), "--dump-dom", url)
	checkDOM(t, dom)

	// Step 2: the screenshot.
	shot := filepath.Join(dir, "page.png")
	runChromium(t, bin, filepath.Join(dir, "shot"),
		"--screenshot="+shot, "--window-size=1200,900", url)
	checkScreenshot(t, shot)
}

// checkDOM asserts the key elements of the dumped DOM.
func checkDOM(t *testing.T, dom []byte) {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(dom))
	if err != nil {
		t.Fatalf("parse dumped dom: %v", err)
	}

	verdict := byID(doc, "verdict")
	if verdict == nil {
		t.Fatalf("no #verdict element in the dom:\n%s", tail(string(dom), 3000))
	}
	if got := attr(verdict, "class"); !strings.Contains(got, "tone-bad") {
		t.Errorf("got #verdict class %q, want tone-bad", got)
	}
	if got := text(byID(doc, "verdict-word")); got != "UNHEALTHY" {
		t.Errorf("got verdict word %q, want UNHEALTHY", got)
	}
	if got := text(byID(doc, "platform")); !strings.Contains(got, "HTTP 503") {
		t.Errorf("got platform line %q, want it to name HTTP 503", got)
	}

	// Each probe is a row whose first cell starts with its name; the
	// hostile name is text, and no script element exists anywhere.
	var probes []string
	for _, row := range rows(byID(doc, "probes"), "probe") {
		probes = append(probes, firstCell(row))
	}
	for _, want := range []string{probeApp, probeSearch, probeHostile} {
		if !slices.ContainsFunc(probes, func(s string) bool {
			return strings.HasPrefix(s, want)
		}) {
			t.Errorf("probe %q missing from the probe rows %q", want, probes)
		}
	}
	for _, tag := range []string{"script", "img", "i"} {
		if n := count(doc, tag); n != 0 {
			t.Errorf("got %d <%s> elements, want 0: input became markup", n, tag)
		}
	}

	var eps []string
	for _, row := range rows(byID(doc, "endpoints"), "endpoint") {
		eps = append(eps, firstCell(row))
	}
	for _, want := range fakeEndpoints {
		if !slices.Contains(eps, want) {
			t.Errorf("endpoint %q missing from the endpoint rows %q", want, eps)
		}
	}
	if got := text(byID(doc, "outbox")); got != "17 waiting" {
		t.Errorf("got outbox %q, want %q", got, "17 waiting")
	}
}

// checkScreenshot asserts the PNG decodes at the window's size and shows
// the verdict banner's and the passing cells' colours.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, format, err := image.Decode(f)
	if err != nil || format != "png" {
		t.Fatalf("decode screenshot: format %q, err %v", format, err)
	}
	if b := img.Bounds(); b.Dx() != shotWidth || b.Dy() != shotHeight {
		t.Fatalf("got screenshot %dx%d, want %dx%d",
			b.Dx(), b.Dy(), shotWidth, shotHeight)
	}

	// The banner spans the page's width; the cells are 12x16 each.
	for _, tc := range []struct {
		name string
		c    color.RGBA
		min  int
	}{
		{"verdict banner", toneBad, 50_000},
		{"passing probe cells", cellPass, 10 * 12 * 16},
	} {
		if n := countColour(img, tc.c); n < tc.min {
			t.Errorf("%s: got %d pixels of %v, want at least %d",
				tc.name, n, tc.c, tc.min)
		}
	}
}

// countColour counts the pixels within a small distance of c.
func countColour(img image.Image, c color.RGBA) int {
	near := func(a uint32, b uint8) bool {
		d := int(a>>8) - int(b)
		return d >= -3 && d <= 3
	}
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r, c.R) && near(g, c.G) && near(bl, c.B) {
				n++
			}
		}
	}
	return n
}

// Ensure the png decoder is registered for image.Decode.
var _ = png.Decode
