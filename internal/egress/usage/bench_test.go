package usage

import (
	"bytes"
	"io"
	"testing"
)

// benchStream is a 500-chunk chat completion with the usage chunk.
var benchStream, _ = chatStream(500, true, "\n")

// chunkedReader serves data in reads of size bytes, again from the start
// after reset, without allocating.
type chunkedReader struct {
	data []byte
	off  int
	size int
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	n := min(len(p), r.size, len(r.data)-r.off)
	copy(p, r.data[r.off:r.off+n])
	r.off += n
	return n, nil
}

func (r *chunkedReader) Close() error { return nil }

// benchBody measures reading the whole stream through a Body, as the
// reverse proxy would, in upstream reads of 1 KiB.
func benchBody(b *testing.B, opts Options) {
	src := &chunkedReader{data: []byte(benchStream), size: 1024}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(benchStream)))
	b.ReportAllocs()
	for b.Loop() {
		src.off = 0
		body := NewBody(src, opts)
		for {
			_, err := body.Read(buf)
			if err != nil {
				break
			}
		}
		if r := body.Result(); r.Usage.Total != 12 {
			b.Fatalf("got %+v", r)
		}
	}
}

// BenchmarkDirect is the baseline: the same reads with no tap.
func BenchmarkDirect(b *testing.B) {
	src := &chunkedReader{data: []byte(benchStream), size: 1024}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(benchStream)))
	for b.Loop() {
		src.off = 0
		for {
			if _, err := src.Read(buf); err != nil {
				break
			}
		}
	}
}

func BenchmarkBodyPassThrough(b *testing.B) {
	benchBody(b, Options{Stream: true})
}

func BenchmarkBodyStrip(b *testing.B) {
	benchBody(b, Options{Stream: true, StripUsageChunk: true})
}

// BenchmarkFramer is framing alone, no JSON decoding.
func BenchmarkFramer(b *testing.B) {
	data := []byte(benchStream)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewFramer(0, func(Event) {})
		for p := data; len(p) > 0; {
			n := min(len(p), 1024)
			_, _ = f.Write(p[:n])
			p = p[n:]
		}
	}
}

// BenchmarkMeterJSON is metering a 1 MiB embeddings-like answer.
func BenchmarkMeterJSON(b *testing.B) {
	var doc bytes.Buffer
	doc.WriteString(`{"object":"list","data":[{"embedding":[`)
	for i := 0; doc.Len() < 1<<20; i++ {
		if i > 0 {
			doc.WriteByte(',')
		}
		doc.WriteString("-0.0123456789")
	}
	doc.WriteString(`]}],"model":"m","usage":{"prompt_tokens":3,"total_tokens":3}}`)
	data := doc.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m := NewMeter(Options{})
		for p := data; len(p) > 0; {
			n := min(len(p), 32<<10)
			_, _ = m.Write(p[:n])
			p = p[n:]
		}
		_ = m.Close()
		if m.Result().Usage.Total != 3 {
			b.Fatal("no usage")
		}
	}
}
