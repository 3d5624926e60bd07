package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestPrepareRequest(t *testing.T) {
	t.Parallel()
	const iu = `"stream_options":{"include_usage":true}`
	tests := []struct {
		name      string
		body      string
		want      string // "" means unchanged
		wantAsked bool
		wantErr   bool
	}{
		{name: "not streaming", body: `{"model":"m","messages":[]}`},
		{name: "stream false", body: `{"model":"m","stream":false}`},
		{name: "stream null", body: `{"model":"m","stream":null}`},
		{name: "no stream_options",
			body: `{"model":"m","stream":true,"messages":[]}`,
			want: `{"model":"m","stream":true,"messages":[],` + iu + `}`},
		{name: "numbers and spacing kept",
			body: "{\n  \"stream\": true,\n  \"temperature\": 0.70000000000000001,\n" +
				"  \"seed\": 123456789012345678901234567890,\n  \"x\": 1E+2\n}\n",
			want: "{\n  \"stream\": true,\n  \"temperature\": 0.70000000000000001,\n" +
				"  \"seed\": 123456789012345678901234567890,\n  \"x\": 1E+2\n," + iu + "}\n"},
		{name: "include_usage false",
			body: `{"stream":true,"stream_options":{"include_usage":false,"x":1}}`,
			want: `{"stream":true,"stream_options":{"include_usage":true,"x":1}}`},
		{name: "include_usage null",
			body: `{"stream":true,"stream_options":{"include_usage" : null}}`,
			want: `{"stream":true,"stream_options":{"include_usage" : true}}`},
		{name: "include_usage true",
			body: `{"stream":true,"stream_options":{"include_usage":true}}`, wantAsked: true},
		{name: "empty stream_options",
			body: `{"stream":true,"stream_options":{ }}`,
			want: `{"stream":true,"stream_options":{ "include_usage":true}}`},
		{name: "other stream_options",
			body: `{"stream_options":{"x":[1,{"y":2}]},"stream":true}`,
			want: `{"stream_options":{"x":[1,{"y":2}],"include_usage":true},"stream":true}`},
		{name: "stream_options null",
			body: `{"stream":true,"stream_options":null}`,
			want: `{"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "escaped keys match",
			body: `{"str\u0065am":true,"stream_options":{"include_\u0075sage":false}}`,
			want: `{"str\u0065am":true,"stream_options":{"include_\u0075sage":true}}`},
		{name: "keys match case-sensitively",
			body: `{"Stream":true}`},
		{name: "not an object", body: `[{"stream":true}]`, wantErr: true},
		{name: "not json", body: `stream=true`, wantErr: true},
		{name: "empty", body: ``, wantErr: true},
		{name: "stream a string", body: `{"stream":"true"}`, wantErr: true},
		{name: "stream repeated", body: `{"stream":false,"stream":true}`, wantErr: true},
		{name: "stream_options repeated",
			body:    `{"stream":true,"stream_options":{},"stream_options":{}}`,
			wantErr: true},
		{name: "stream_options a string",
			body: `{"stream":true,"stream_options":"x"}`, wantErr: true},
		{name: "include_usage a string",
			body:    `{"stream":true,"stream_options":{"include_usage":"false"}}`,
			wantErr: true},
		{name: "data after the object",
			body: `{"stream":true} {}`, wantErr: true},
		{name: "truncated", body: `{"stream":true,`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, asked, err := PrepareRequest([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadRequest) {
				t.Errorf("got error %v, want ErrBadRequest", err)
			}
			want := tt.want
			if want == "" {
				want = tt.body
			}
			if string(got) != want {
				t.Errorf("got body %q, want %q", got, want)
			}
			if asked != tt.wantAsked {
				t.Errorf("got asked %v, want %v", asked, tt.wantAsked)
			}
		})
	}
}

func TestParseRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    RequestInfo
		wantErr bool
	}{
		{"chat", `{"model":"gpt-4o-mini","stream":true,"max_tokens":256,"messages":[]}`,
			RequestInfo{Model: "gpt-4o-mini", Stream: true, MaxTokens: 256, N: 1}, false},
		{"max_completion_tokens and n",
			`{"model":"o3","max_completion_tokens":1000,"n":3}`,
			RequestInfo{Model: "o3", MaxTokens: 1000, N: 3}, false},
		{"the largest cap", `{"max_tokens":10,"max_completion_tokens":20}`,
			RequestInfo{MaxTokens: 20, N: 1}, false},
		{"responses api", `{"model":"gpt-4.1","input":"hi","max_output_tokens":50}`,
			RequestInfo{Model: "gpt-4.1", MaxTokens: 50, N: 1}, false},
		{"nulls", `{"model":null,"max_tokens":null,"n":null,"stream":null}`,
			RequestInfo{N: 1}, false},
		{"embeddings", `{"model":"text-embedding-3-small","input":["a","b"]}`,
			RequestInfo{Model: "text-embedding-3-small", N: 1}, false},
		{"negative cap", `{"max_tokens":-1}`, RequestInfo{}, true},
		{"fractional cap", `{"max_tokens":1.5}`, RequestInfo{}, true},
		{"cap as a string", `{"max_tokens":"10"}`, RequestInfo{}, true},
		{"cap past int64", `{"max_tokens":99999999999999999999}`, RequestInfo{}, true},
		{"n zero", `{"n":0}`, RequestInfo{}, true},
		{"model a number", `{"model":4}`, RequestInfo{}, true},
		{"model repeated", `{"model":"a","model":"b"}`, RequestInfo{}, true},
		{"not an object", `"x"`, RequestInfo{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRequest([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestObjectOffsets(t *testing.T) {
	t.Parallel()
	body := []byte(" {\"a\" : [1, 2] ,\n\"b\":{\"c\":\"}\"}, \"d\":-0.5e3 } ")
	ms, closing, err := object(body)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.key+"="+string(body[m.start:m.end]))
	}
	want := []string{"a=[1, 2]", `b={"c":"}"}`, "d=-0.5e3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if body[closing] != '}' || !bytes.Equal(bytes.TrimSpace(body[closing+1:]), nil) {
		t.Errorf("closing brace at %d: got %q", closing, body[closing:])
	}
}

// checkPrepared checks PrepareRequest's promise on one input: unchanged
// unless it streams and the app did not ask; otherwise equal as JSON to
// the input with include_usage set, and stable when prepared again.
func checkPrepared(t *testing.T, in []byte) {
	t.Helper()
	out, asked, err := PrepareRequest(in)
	if err != nil || asked {
		if !bytes.Equal(out, in) {
			t.Fatalf("body changed on error %v or asked %v: %q", err, asked, out)
		}
		return
	}
	if bytes.Equal(out, in) {
		if info, err := ParseRequest(in); err == nil && info.Stream {
			t.Fatalf("streaming body left without include_usage: %q", in)
		}
		return
	}
	if info, err := ParseRequest(in); err == nil && !info.Stream {
		t.Fatalf("body of a request that does not stream changed: %q", out)
	}

	var a, b map[string]any
	if err := decodeNumbers(in, &a); err != nil {
		t.Fatalf("input accepted but not decodable: %v", err)
	}
	if err := decodeNumbers(out, &b); err != nil {
		t.Fatalf("output is not JSON: %v: %q", err, out)
	}
	so, _ := a["stream_options"].(map[string]any)
	if so == nil {
		so = map[string]any{}
	}
	so["include_usage"] = true
	a["stream_options"] = so
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("prepared body differs beyond include_usage:\n in %q\nout %q", in, out)
	}
	again, asked, err := PrepareRequest(out)
	if err != nil || !asked || !bytes.Equal(again, out) {
		t.Fatalf("prepared twice: got %q, %v, %v", again, asked, err)
	}
}

func decodeNumbers(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

// A refused member is named, with what is wrong, and never quoted.
func TestFieldError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body, field, problem string
	}{
		{`{"max_tokens":-1}`, "max_tokens", problemNegative},
		{`{"max_tokens":-1.5}`, "max_tokens", problemNegative},
		{`{"max_tokens":"5"}`, "max_tokens", problemQuoted},
		{`{"max_completion_tokens":5.5}`, "max_completion_tokens", problemFraction},
		{`{"max_output_tokens":1E3}`, "max_output_tokens", problemFraction},
		{`{"max_tokens":99999999999999999999}`, "max_tokens", problemTooLarge},
		{`{"n":[1]}`, "n", problemNotInt},
		{`{"n":0}`, "n", problemBelowOne},
		{`{"model":{}}`, "model", problemString},
		{`{"stream":1}`, "stream", problemBool},
		{`{"n":1,"n":2}`, "n", problemRepeated},
		{`{"stream":true,"stream_options":7}`, "stream_options", problemObject},
		{`{"stream":true,"stream_options":{"include_usage":"x"}}`,
			"stream_options.include_usage", problemBool},
		{`{"stream":true,"stream_options":{"include_usage":1,"include_usage":2}}`,
			"stream_options.include_usage", problemRepeated},
	}
	for _, tt := range tests {
		_, err := ParseRequest([]byte(tt.body))
		if err == nil {
			_, _, err = PrepareRequest([]byte(tt.body))
		}
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: got %v, want a FieldError matching ErrBadRequest", tt.body, err)
			continue
		}
		if fe.Field != tt.field || fe.Problem != tt.problem {
			t.Errorf("%s: got %s %q, want %s %q", tt.body, fe.Field, fe.Problem,
				tt.field, tt.problem)
		}
	}
}

func TestTokenCaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body    string
		want    map[string]int64
		wantErr bool
	}{
		{`{"model":"m"}`, map[string]int64{}, false},
		{`{"max_tokens":null,"max_output_tokens":0}`, map[string]int64{"max_output_tokens": 0},
			false},
		{`{"max_tokens":5,"max_completion_tokens":7}`,
			map[string]int64{"max_tokens": 5, "max_completion_tokens": 7}, false},
		{`{"max_tokens":-5}`, nil, true},
		{`{"max_tokens":5,"max_tokens":6}`, nil, true},
		{`[1]`, nil, true},
	}
	for _, tt := range tests {
		got, err := TokenCaps([]byte(tt.body))
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v, %v; want %v (error %v)", tt.body, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSetCap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, want string
		wantErr          bool
	}{
		{"added", `{"model":"m"}`, `{"model":"m","max_tokens":64}`, false},
		{"added to an empty object", "{ }\n", "{ \"max_tokens\":64}\n", false},
		{"null replaced in place", `{"max_tokens" : null, "x":1}`,
			`{"max_tokens" : 64, "x":1}`, false},
		{"given kept", `{"max_tokens":5}`, `{"max_tokens":5}`, false},
		{"escaped key matched", `{"max\u005ftokens":null}`, `{"max\u005ftokens":64}`, false},
		{"repeated", `{"max_tokens":null,"max_tokens":null}`, "", true},
		{"not an object", `"x"`, "", true},
	}
	for _, tt := range tests {
		got, err := SetCap([]byte(tt.body), "max_tokens", 64)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: error %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadRequest) || string(got) != tt.body {
				t.Errorf("%s: got %q, %v; want the body unchanged and ErrBadRequest",
					tt.name, got, err)
			}
			continue
		}
		if string(got) != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		if !json.Valid(got) {
			t.Errorf("%s: %q is not JSON", tt.name, got)
		}
	}
}

// FuzzSetCap: whatever the object, a cap set is read back, and the body
// stays JSON.
func FuzzSetCap(f *testing.F) {
	f.Add(`{"model":"m"}`)
	f.Add(`{"max_tokens":null}`)
	f.Add(`{ }`)
	f.Add(`{"max_tokens":3,"x":[{}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		before, err := TokenCaps([]byte(body))
		if err != nil {
			return
		}
		out, err := SetCap([]byte(body), "max_tokens", 64)
		if err != nil {
			t.Fatalf("TokenCaps read %q but SetCap: %v", body, err)
		}
		if !json.Valid(out) {
			t.Fatalf("%q is not JSON", out)
		}
		after, err := TokenCaps(out)
		if err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		want, given := before["max_tokens"]
		if !given {
			want = 64
		}
		if after["max_tokens"] != want {
			t.Fatalf("%q: max_tokens %d, want %d", out, after["max_tokens"], want)
		}
	})
}
