package usage

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// frame runs a Framer over chunks and returns copies of its events.
func frame(maxBytes int, chunks ...string) ([]Event, *Framer) {
	var got []Event
	f := NewFramer(maxBytes, func(ev Event) {
		ev.Data = append([]byte(nil), ev.Data...)
		got = append(got, ev)
	})
	for _, c := range chunks {
		_, _ = f.Write([]byte(c))
	}
	return got, f
}

// The C1 usage event, cut where the case says and in every variant.
const (
	c1Head = `data: {"choices":[],"usage":{"prompt_tokens":5,`
	c1Tail = `"completion_tokens":7,"total_tokens":12}}`
)

func TestC1UsageEventSplitAcrossReads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		chunks []string
	}{
		{"lf split inside the json", []string{
			c1Head, c1Tail + "\n\n", "data: [DONE]\n\n"}},
		{"lf split inside data:", []string{
			"da", "ta: " + c1Head[6:] + c1Tail + "\n\ndata: [DONE]\n\n"}},
		{"lf split after data:", []string{
			"data:", " " + c1Head[6:] + c1Tail + "\n\ndata: [DONE]\n\n"}},
		{"lf split between the line ends", []string{
			c1Head + c1Tail + "\n", "\ndata: [DONE]\n\n"}},
		{"crlf split between cr and lf", []string{
			c1Head + c1Tail + "\r", "\n\r\ndata: [DONE]\r\n\r\n"}},
		{"crlf split between the line ends", []string{
			c1Head + c1Tail + "\r\n", "\r\ndata: [DONE]\r\n\r\n"}},
		{"crlf split inside the second line end", []string{
			c1Head + c1Tail + "\r\n\r", "\ndata: [DONE]\r\n\r\n"}},
		{"crlf split inside the json", []string{
			c1Head, c1Tail + "\r\n\r\n", "data: [DONE]\r\n\r\n"}},
		{"cr only split between the line ends", []string{
			c1Head + c1Tail + "\r", "\rdata: [DONE]\r\r"}},
		{"cr only split inside the json", []string{
			c1Head, c1Tail + "\r\r", "data: [DONE]\r\r"}},
		{"mixed line ends", []string{
			c1Head + c1Tail + "\r\n", "\n", "data: [DONE]\r\r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			whole := strings.Join(tt.chunks, "")
			splits := map[string][]string{
				"as cut":     tt.chunks,
				"one read":   {whole},
				"byte reads": splitEvery(whole, 1),
			}
			for how, chunks := range splits {
				got := meterChunks(Options{Stream: true}, chunks...)
				wantUsage(t, got, "")
				if got.Events != 2 || !got.Done || got.Truncated {
					t.Errorf("%s: got events %d done %v truncated %v, "+
						"want 2 true false", how, got.Events, got.Done, got.Truncated)
				}
			}
		})
	}
}

func TestFramerFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		want  []Event
	}{
		{"multi-line data joined with lf",
			"data: a\ndata: b\ndata:c\n\n",
			[]Event{{Data: []byte("a\nb\nc")}}},
		{"comments and unknown fields ignored",
			": keep-alive\nretry: 10\nfoo: bar\ndata: x\n\n",
			[]Event{{Data: []byte("x")}}},
		{"event and id kept, id persists, type resets",
			"event: response.created\nid: 7\ndata: 1\n\ndata: 2\n\n",
			[]Event{
				{Type: "response.created", ID: "7", Data: []byte("1")},
				{ID: "7", Data: []byte("2")},
			}},
		{"id with nul ignored",
			"id: a\x00b\ndata: 1\n\n",
			[]Event{{Data: []byte("1")}}},
		{"only one leading space removed",
			"data:  two\n\n",
			[]Event{{Data: []byte(" two")}}},
		{"field without colon is an empty data line",
			"data\ndata\n\n",
			[]Event{{Data: []byte("\n")}}},
		{"block without data dispatches nothing",
			"event: ping\n\n\n\ndata: x\n\n",
			[]Event{{Data: []byte("x")}}},
		{"leading byte order mark ignored",
			"\xef\xbb\xbfdata: x\n\n",
			[]Event{{Data: []byte("x")}}},
		{"unterminated event not dispatched",
			"data: x\n\ndata: y\n",
			[]Event{{Data: []byte("x")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, chunks := range [][]string{
				{tt.input}, splitEvery(tt.input, 1), splitEvery(tt.input, 3),
			} {
				got, _ := frame(0, chunks...)
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestFramerPending(t *testing.T) {
	t.Parallel()
	tests := []struct {
		input string
		want  bool
	}{
		{"data: x\n\n", false},
		{"data: x\n", true},
		{"data: x", true},
		{": comment\n", false},
		{"data: x\r\n\r", false}, // the "\n" may never come: still ended
	}
	for _, tt := range tests {
		_, f := frame(0, tt.input)
		if got := f.Pending(); got != tt.want {
			t.Errorf("Pending after %q: got %v, want %v", tt.input, got, tt.want)
		}
	}
}

func TestEventSizeCap(t *testing.T) {
	t.Parallel()
	const max = 128
	big := "data: " + strings.Repeat("x", 10*max) + "\n" +
		"data: " + strings.Repeat("y", 10*max) + "\n\n"
	small := `data: {"choices":[],"usage":{"prompt_tokens":5,` +
		`"completion_tokens":7,"total_tokens":12}}` + "\n\n"
	if len(small) > max {
		t.Fatalf("the usage event (%d bytes) must fit under the cap", len(small))
	}
	input := big + small

	for _, chunks := range [][]string{{input}, splitEvery(input, 1), splitEvery(input, 7)} {
		got, f := frame(max, chunks...)
		if f.Oversize() != 1 || len(got) != 1 {
			t.Fatalf("got %d oversize, %d events; want 1, 1", f.Oversize(), len(got))
		}
		if cap(f.line) > max || cap(f.data) > max {
			t.Errorf("buffers grew past the cap: line %d, data %d", cap(f.line), cap(f.data))
		}

		r := meterChunks(Options{Stream: true, MaxEventBytes: max}, chunks...)
		if r.Failures != 1 || r.Oversize != 1 || !errors.Is(r.Err, ErrTooLarge) {
			t.Errorf("got failures %d oversize %d err %v; want 1 1 ErrTooLarge",
				r.Failures, r.Oversize, r.Err)
		}
		if r.Usage.Total != 12 {
			t.Errorf("usage after the oversize event: got %+v, want total 12", r.Usage)
		}
	}
}

func TestEventSizeCapEndlessLine(t *testing.T) {
	t.Parallel()
	// An upstream that never ends its line must not grow memory.
	f := NewFramer(1024, nil)
	chunk := []byte(strings.Repeat("z", 4096))
	for range 2048 { // 8 MiB
		_, _ = f.Write(chunk)
	}
	if cap(f.line) > 1024 {
		t.Errorf("line buffer: got cap %d, want at most 1024", cap(f.line))
	}
	if f.Oversize() != 1 || !f.Pending() {
		t.Errorf("got oversize %d pending %v, want 1 true", f.Oversize(), f.Pending())
	}
}
