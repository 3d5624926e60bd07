package usage

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestFromJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    Usage
		wantErr error // nil: no error; errAny: some error
	}{
		{"chat completion",
			`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},` +
				`"finish_reason":"stop"}],"usage":{"prompt_tokens":9,` +
				`"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":` +
				`{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`,
			Usage{Model: "gpt-4o-mini", Prompt: 9, Completion: 3, Total: 12, Found: true},
			nil},
		{"completion",
			`{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct",` +
				`"choices":[{"text":"x","index":0}],"usage":{"prompt_tokens":4,` +
				`"completion_tokens":16,"total_tokens":20}}`,
			Usage{Model: "gpt-3.5-turbo-instruct", Prompt: 4, Completion: 16,
				Total: 20, Found: true},
			nil},
		{"embeddings",
			`{"object":"list","data":[{"object":"embedding","index":0,` +
				`"embedding":[0.1,-0.2,3e-5]}],"model":"text-embedding-3-small",` +
				`"usage":{"prompt_tokens":8,"total_tokens":8}}`,
			Usage{Model: "text-embedding-3-small", Prompt: 8, Total: 8, Found: true},
			nil},
		{"responses api",
			`{"id":"resp_1","object":"response","status":"completed",` +
				`"model":"gpt-4o-2024-08-06","output":[{"type":"message",` +
				`"content":[{"type":"output_text","text":"{\"usage\":1}"}]}],` +
				`"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},` +
				`"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},` +
				`"total_tokens":123}}`,
			Usage{Model: "gpt-4o-2024-08-06", Prompt: 36, Completion: 87,
				Total: 123, Found: true},
			nil},
		{"no total: prompt plus completion",
			`{"usage":{"prompt_tokens":2,"completion_tokens":3}}`,
			Usage{Prompt: 2, Completion: 3, Total: 5, Found: true}, nil},
		{"error answer has no usage",
			`{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}`,
			Usage{}, nil},
		{"usage null", `{"model":"m","usage":null}`, Usage{}, nil},
		{"nested usage is not the answer's",
			`{"choices":[{"usage":{"total_tokens":99}}]}`, Usage{}, nil},
		{"escaped key",
			`{"\u0075sage":{"total_tokens":4},"mod\u0065l":"m"}`,
			Usage{Model: "m", Total: 4, Found: true}, nil},
		{"duplicate key: the last wins",
			`{"usage":{"total_tokens":1},"usage":{"total_tokens":2}}`,
			Usage{Total: 2, Found: true}, nil},
		{"white space everywhere",
			" \n{ \"usage\" :\t{ \"total_tokens\" : 3 } , \"model\" : \"m\" }\r\n",
			Usage{Model: "m", Total: 3, Found: true}, nil},
		{"empty body", "", Usage{}, nil},
		{"not an object", `[1,2]`, Usage{}, ErrNotObject},
		{"html error page", `<html>502</html>`, Usage{}, ErrNotObject},
		{"truncated", `{"model":"m","usage":{"total_tokens":3}`,
			Usage{Model: "m", Total: 3, Found: true}, ErrTruncated},
		{"truncated before usage", `{"model":"m","choi`, Usage{}, ErrTruncated},
		{"negative count", `{"usage":{"total_tokens":-1}}`, Usage{}, ErrNegative},
		{"no counts", `{"usage":{"foo":1}}`, Usage{}, ErrNoCounts},
		{"count not a number", `{"usage":{"total_tokens":"12"}}`, Usage{}, errAny},
		{"data after the object", `{"usage":{"total_tokens":1}} x`,
			Usage{Total: 1, Found: true}, ErrNotObject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := FromJSON([]byte(tt.body))
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}

			// The streaming Meter agrees, however the body is split.
			for _, size := range []int{1, 5, len(tt.body) + 1} {
				r := meterChunks(Options{}, splitEvery(tt.body, size)...)
				if r.Usage != tt.want {
					t.Errorf("meter, reads of %d: got %+v, want %+v", size, r.Usage, tt.want)
				}
				wantFail := int64(map[bool]int{true: 1}[tt.wantErr != nil])
				if r.Failures != wantFail {
					t.Errorf("meter, reads of %d: failures %d, want %d (%v)",
						size, r.Failures, wantFail, r.Err)
				}
			}
		})
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("got error %v, want none", err)
	case want == errAny && err == nil:
		t.Errorf("got no error, want one")
	case want != nil && want != errAny && !errors.Is(err, want):
		t.Errorf("got error %v, want %v", err, want)
	}
}

func TestMeterLargeEmbeddingsAnswer(t *testing.T) {
	t.Parallel()
	// About 8 MiB of base64 vectors, then the usage at the end.
	var b strings.Builder
	b.WriteString(`{"object":"list","data":[`)
	vec := base64.StdEncoding.EncodeToString(make([]byte, 6144))
	for i := range 1000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":"%s"}`, i, vec)
	}
	b.WriteString(`],"model":"text-embedding-3-small",` +
		`"usage":{"prompt_tokens":2000,"total_tokens":2000}}`)
	body := b.String()

	m := NewMeter(Options{})
	for _, c := range splitEvery(body, 32<<10) {
		_, _ = m.Write([]byte(c))
	}
	_ = m.Close()
	r := m.Result()
	want := Usage{Model: "text-embedding-3-small", Prompt: 2000, Total: 2000, Found: true}
	if r.Usage != want || r.Failures != 0 {
		t.Errorf("got %+v, want %+v and no failures", r, want)
	}
	if c := cap(m.doc.buf); c > maxCapture {
		t.Errorf("kept %d bytes, want at most %d", c, maxCapture)
	}
}

func TestFromJSONHugeUsageValue(t *testing.T) {
	t.Parallel()
	body := `{"usage":{"x":"` + strings.Repeat("a", 2*maxCapture) + `"},"model":"m"}`
	got, err := FromJSON([]byte(body))
	if !errors.Is(err, ErrTooLarge) || got.Found {
		t.Errorf("got %+v, %v; want no usage and ErrTooLarge", got, err)
	}
}

func TestStreamUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		stream       string
		want         Usage
		wantFailures int64
		wantDone     bool
	}{
		{"chat stream with the usage chunk",
			func() string { s, _ := chatStream(2, true, "\n"); return s }(),
			Usage{Model: "gpt-4o-mini", Prompt: 5, Completion: 7, Total: 12, Found: true},
			0, true},
		{"chat stream without usage",
			func() string { s, _ := chatStream(2, false, "\n"); return s }(),
			Usage{Model: "gpt-4o-mini"}, 0, true},
		{"completions stream",
			`data: {"id":"cmpl-1","object":"text_completion","model":"i",` +
				`"choices":[{"text":"a","index":0}],"usage":null}` + "\n\n" +
				`data: {"id":"cmpl-1","object":"text_completion","model":"i",` +
				`"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,` +
				`"total_tokens":3}}` + "\n\ndata: [DONE]\n\n",
			Usage{Model: "i", Prompt: 1, Completion: 2, Total: 3, Found: true}, 0, true},
		{"responses api stream", responsesStream,
			Usage{Model: "gpt-4.1", Prompt: 10, Completion: 20, Total: 30, Found: true},
			0, false},
		{"malformed json counted, later usage still read",
			"data: {\"choices\":[\n\n" + c1Head + c1Tail + "\n\ndata: [DONE]\n\n",
			Usage{Prompt: 5, Completion: 7, Total: 12, Found: true}, 1, true},
		{"malformed usage counted",
			`data: {"choices":[],"usage":{"total_tokens":-4}}` + "\n\n",
			Usage{}, 1, false},
		{"data not an object counted",
			"data: 42\n\ndata: \"x\"\n\n", Usage{}, 2, false},
		{"running totals: the last one wins",
			`data: {"choices":[{"index":0}],"usage":{"total_tokens":3}}` + "\n\n" +
				`data: {"choices":[{"index":0}],"usage":{"total_tokens":9}}` + "\n\n",
			Usage{Total: 9, Found: true}, 0, false},
		{"truncated inside the usage event",
			c1Head, Usage{}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, size := range []int{1, 13, len(tt.stream) + 1} {
				r := meterChunks(Options{Stream: true}, splitEvery(tt.stream, size)...)
				if r.Usage != tt.want {
					t.Errorf("reads of %d: got %+v, want %+v", size, r.Usage, tt.want)
				}
				if r.Failures != tt.wantFailures || (r.Err != nil) != (r.Failures > 0) {
					t.Errorf("reads of %d: failures %d (%v), want %d",
						size, r.Failures, r.Err, tt.wantFailures)
				}
				if r.Done != tt.wantDone {
					t.Errorf("reads of %d: done %v, want %v", size, r.Done, tt.wantDone)
				}
			}
		})
	}
}

// responsesStream is a Responses API stream, abridged.
const responsesStream = "event: response.created\n" +
	`data: {"type":"response.created","sequence_number":0,"response":` +
	`{"id":"resp_1","object":"response","status":"in_progress",` +
	`"model":"gpt-4.1","output":[],"usage":null}}` + "\n\n" +
	"event: response.output_text.delta\n" +
	`data: {"type":"response.output_text.delta","sequence_number":4,` +
	`"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}` + "\n\n" +
	"event: response.completed\n" +
	`data: {"type":"response.completed","sequence_number":9,"response":` +
	`{"id":"resp_1","object":"response","status":"completed",` +
	`"model":"gpt-4.1","output":[],"usage":{"input_tokens":10,` +
	`"input_tokens_details":{"cached_tokens":0},"output_tokens":20,` +
	`"output_tokens_details":{"reasoning_tokens":0},"total_tokens":30}}}` + "\n\n"

func TestResponsesStreamNotStripped(t *testing.T) {
	t.Parallel()
	b := NewBody(newChunkReader(splitEvery(responsesStream, 17)...),
		Options{Stream: true, StripUsageChunk: true})
	if got := readBody(t, b); got != responsesStream {
		t.Errorf("got %q, want the stream unchanged", got)
	}
	if r := b.Result(); r.Usage.Total != 30 || r.Stripped != 0 {
		t.Errorf("got %+v, want total 30 and nothing stripped", r)
	}
}

func TestMeterWriteAfterCloseIgnored(t *testing.T) {
	t.Parallel()
	m := NewMeter(Options{Stream: true})
	_ = m.Close()
	_, _ = m.Write([]byte(c1Head + c1Tail + "\n\n"))
	if r := m.Result(); r.Usage.Found || r.Events != 0 {
		t.Errorf("got %+v, want nothing read after Close", r)
	}
}

func TestMayHoldUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		data string
		want bool
	}{
		{`{"choices":[{"delta":{"content":"you use it"}}],"usage":null}`, false},
		{`{"choices":[],"usage":{"total_tokens":1}}`, true},
		{`{"Usage":{"total_tokens":1}}`, true},
		{`{"us\u0061ge":{}}`, true},
		{`{"usage" : null}`, true}, // not the exact form: decoded
		{`{"usage":null,"usage":{}}`, true},
		{`{"x":"a\"b"}`, false},
		{`{"type":"response.output_text.delta","delta":"Hi"}`, false},
	}
	for _, tt := range tests {
		if got := mayHoldUsage([]byte(tt.data)); got != tt.want {
			t.Errorf("mayHoldUsage(%s): got %v, want %v", tt.data, got, tt.want)
		}
	}
}

func TestErrorsHoldNoInputBytes(t *testing.T) {
	t.Parallel()
	const secret = "Zq"
	bodies := []string{
		`{"usage":{"total_tokens":` + secret + `}}`,
		`{"model":` + secret + `}`,
	}
	for _, body := range bodies {
		_, err := FromJSON([]byte(body))
		if err == nil || strings.Contains(err.Error(), "Z") {
			t.Errorf("FromJSON(%s): got error %v, want one without input bytes", body, err)
		}
	}
	r := meterChunks(Options{Stream: true}, "data: {"+secret+"}\n\n")
	if r.Err == nil || strings.Contains(r.Err.Error(), "Z") {
		t.Errorf("stream: got error %v, want one without input bytes", r.Err)
	}
	_, _, err := PrepareRequest([]byte(`{"stream":` + secret + `}`))
	if err == nil || strings.Contains(err.Error(), "Z") {
		t.Errorf("PrepareRequest: got error %v, want one without input bytes", err)
	}
}
