package usage

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// splitBy cuts data into pieces whose lengths come from cuts (each byte
// a length of 0-16: an empty piece is an empty read), the last piece
// taking the rest.
func splitBy(data, cuts []byte) [][]byte {
	var out [][]byte
	for _, c := range cuts {
		n := int(c % 17)
		if n >= len(data) {
			break
		}
		out = append(out, data[:n])
		data = data[n:]
	}
	return append(out, data)
}

// fuzzSeeds are streams that exercise the framer's corners.
func fuzzSeeds() []string {
	lf, _ := chatStream(2, true, "\n")
	crlf, _ := chatStream(1, true, "\r\n")
	cr, _ := chatStream(1, true, "\r")
	return []string{
		lf, crlf, cr, responsesStream,
		c1Head + c1Tail + "\r\n\r\ndata: [DONE]\r\n\r\n",
		"\xef\xbb\xbfdata: a\ndata: b\n\n: c\n\nid: 1\nevent: e\ndata\n\n",
		"data: " + string(bytes.Repeat([]byte("x"), 200)) + "\n\ndata: {}\n\n",
		"\r\r\n\n\r\n\r",
	}
}

// FuzzFramer checks that framing, metering and stripping do not depend
// on read boundaries, never panic, and keep memory under the cap.
func FuzzFramer(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add([]byte(s), []byte{byte(i), 3, 0, 15, 7})
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		const max = 96
		pieces := splitBy(data, cuts)
		wantEvents, wf := frame(max, string(data))
		var gotEvents []Event
		gf := NewFramer(max, func(ev Event) {
			ev.Data = append([]byte(nil), ev.Data...)
			gotEvents = append(gotEvents, ev)
		})
		for _, p := range pieces {
			_, _ = gf.Write(p)
			if cap(gf.line) > max || cap(gf.data) > max {
				t.Fatalf("buffers past the cap: line %d data %d", cap(gf.line), cap(gf.data))
			}
		}
		if !reflect.DeepEqual(gotEvents, wantEvents) {
			t.Fatalf("split framing differs:\n got %q\nwant %q", gotEvents, wantEvents)
		}
		if gf.Oversize() != wf.Oversize() || gf.Pending() != wf.Pending() {
			t.Fatalf("split state differs: oversize %d/%d pending %v/%v",
				gf.Oversize(), wf.Oversize(), gf.Pending(), wf.Pending())
		}

		var strs []string
		for _, p := range pieces {
			strs = append(strs, string(p))
		}
		opts := Options{Stream: true, MaxEventBytes: max}
		for _, strip := range []bool{false, true} {
			opts.StripUsageChunk = strip
			one := NewBody(newChunkReader(string(data)), opts)
			split := NewBody(newChunkReader(strs...), opts)
			oneOut, splitOut := readBody(t, one), readBody(t, split)
			if oneOut != splitOut {
				t.Fatalf("strip %v: split output differs:\n got %q\nwant %q",
					strip, splitOut, oneOut)
			}
			r1, r2 := one.Result(), split.Result()
			r1.Err, r2.Err = nil, nil
			if r1 != r2 {
				t.Fatalf("strip %v: split result differs: %+v, %+v", strip, r2, r1)
			}
			if (!strip || r1.Stripped == 0) && oneOut != string(data) {
				t.Fatalf("strip %v: output not exact: %q", strip, oneOut)
			}
			if cap(split.held) > 3*max+2 {
				t.Fatalf("held %d bytes", cap(split.held))
			}
		}
	})
}

// FuzzFromJSON checks the bounded document scanner against
// encoding/json on valid objects, and split invariance on anything.
func FuzzFromJSON(f *testing.F) {
	f.Add([]byte(`{"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}`), []byte{1})
	f.Add([]byte(`{"a":[{"usage":1}],"usage":{"input_tokens":2,"output_tokens":3}}`), []byte{4})
	f.Add([]byte(`{"\u0075sage":null,"model":"x\"y"}`), []byte{0, 9})
	f.Add([]byte(` {"model" : 1 , "usage" : {}} `), []byte{2})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		got, err := FromJSON(data)

		m := NewMeter(Options{})
		for _, p := range splitBy(data, cuts) {
			_, _ = m.Write(p)
		}
		_ = m.Close()
		r := m.Result()
		if r.Usage != got || (r.Failures > 0) != (err != nil) {
			t.Fatalf("split metering differs: %+v, want %+v (%v)", r, got, err)
		}

		// On a valid object, agree with encoding/json's view of the
		// top-level members.
		var ref map[string]json.RawMessage
		if json.Unmarshal(data, &ref) != nil || ref == nil {
			return
		}
		var want Usage
		var werr error
		if raw, ok := ref["usage"]; ok {
			want, werr = decodeUsage(raw, "")
		}
		if raw, ok := ref["model"]; ok {
			var model *string
			switch {
			case json.Unmarshal(raw, &model) != nil:
				werr = errAny
			case model != nil && want.Found:
				want.Model = *model
			}
		}
		if werr != nil {
			if err == nil {
				t.Fatalf("got %+v, want an error like %v", got, werr)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("got %+v, %v; want %+v", got, err, want)
		}
	})
}

// FuzzPrepareRequest checks that PrepareRequest never panics and changes
// nothing but stream_options.include_usage.
func FuzzPrepareRequest(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o-mini","stream":true,"messages":[]}`))
	f.Add([]byte(`{"stream":true,"stream_options":{"include_usage":false}}`))
	f.Add([]byte(`{"stream":true,"stream_options":{"include_usage":true}}`))
	f.Add([]byte(`{"stream":true,"stream_options":{}, "x": 1.0e+300}`))
	f.Add([]byte(`{"stream":true,"stream_options":null}`))
	f.Add([]byte(`{"str\u0065am":true}`))
	f.Add([]byte(`{"stream":false}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPrepared(t, data)
		_, _ = ParseRequest(data)
	})
}

// FuzzEventUsage checks the meter's fast path: an event that
// mayHoldUsage passes over never carries a usage the full decoding
// would find.
func FuzzEventUsage(f *testing.F) {
	f.Add([]byte(`{"choices":[{"delta":{"content":"you"}}],"usage":null}`))
	f.Add([]byte(`{"choices":[],"usage":{"total_tokens":1}}`))
	f.Add([]byte(`{"USAGE":{"total_tokens":1}}`))
	f.Add([]byte(`{"us\u0061ge":{"total_tokens":1}}`))
	f.Add([]byte(`{"usage":null,"usage":{"total_tokens":1}}`))
	f.Add([]byte(`{"response":{"usage":{"input_tokens":1}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if mayHoldUsage(data) {
			return
		}
		if u, _, err := chunkUsage(data); err == nil && u.Found {
			t.Fatalf("fast path would miss usage %+v in %q", u, data)
		}
	})
}

// FuzzStrip builds streams from a plan of events and line ends, so the
// output a stripping Body must give is known without the framer: every
// event's bytes, in order, except the usage-only chunks.
func FuzzStrip(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5}, []byte{1, 2, 3})
	f.Add([]byte{6, 7, 8, 9, 10, 11, 12, 13, 14}, []byte{0})
	f.Add([]byte{3, 3, 4, 4, 5, 5}, []byte{15, 15, 0, 0})
	f.Fuzz(func(t *testing.T, plan, cuts []byte) {
		const max = 160
		eols := []string{"\n", "\r", "\r\n"}
		var stream, want strings.Builder
		usages := 0
		for _, p := range plan {
			eol := eols[int(p)%3]
			var ev string
			usageOnly := false
			switch (p / 3) % 5 {
			case 0:
				ev = `data: {"model":"m","choices":[{"index":0}],"usage":null}` + eol + eol
			case 1:
				ev = c1Head + c1Tail + eol + eol
				usageOnly = true
			case 2:
				ev = ": ping" + eol + eol
			case 3:
				ev = "data: " + strings.Repeat("x", 2*max) + eol + eol
			case 4:
				ev = "data: [DONE]" + eol + eol
			}
			stream.WriteString(ev)
			if usageOnly {
				usages++
			} else {
				want.WriteString(ev)
			}
		}

		var pieces []string
		for _, p := range splitBy([]byte(stream.String()), cuts) {
			pieces = append(pieces, string(p))
		}
		b := NewBody(newChunkReader(pieces...),
			Options{Stream: true, StripUsageChunk: true, MaxEventBytes: max})
		if got := readBody(t, b); got != want.String() {
			t.Fatalf("got %q, want %q", got, want.String())
		}
		r := b.Result()
		if r.Stripped != int64(usages) || r.Usage.Found != (usages > 0) {
			t.Fatalf("got %+v, want %d stripped", r, usages)
		}
	})
}
