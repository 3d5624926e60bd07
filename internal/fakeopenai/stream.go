package fakeopenai

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Request headers that override Options.Stream (and Options.Words) for
// one request. Values that do not parse are ignored.
const (
	// HeaderWords sets the completion words (an integer >= 0).
	HeaderWords = "X-Fake-Words"
	// HeaderDelay sets StreamControl.Delay (a Go duration, "10ms").
	HeaderDelay = "X-Fake-Delay"
	// HeaderFirstPause sets StreamControl.FirstPause (a Go duration).
	HeaderFirstPause = "X-Fake-First-Pause"
	// HeaderCRLF sets StreamControl.CRLF ("true" or "1").
	HeaderCRLF = "X-Fake-CRLF"
	// HeaderSplitEvent sets Split.Event (an integer).
	HeaderSplitEvent = "X-Fake-Split-Event"
	// HeaderSplitAt sets Split.At (an integer).
	HeaderSplitAt = "X-Fake-Split-At"
	// HeaderSplitAfter sets Split.After (the header's text).
	HeaderSplitAfter = "X-Fake-Split-After"
	// HeaderSplitDelay sets Split.Delay (a Go duration).
	HeaderSplitDelay = "X-Fake-Split-Delay"
	// HeaderResetAfter sets StreamControl.ResetAfter (an integer).
	HeaderResetAfter = "X-Fake-Reset-After"
	// HeaderEndless sets StreamControl.Endless ("true" or "1").
	HeaderEndless = "X-Fake-Endless"
)

// StreamControl shapes a streamed answer. The zero value streams every
// event at once, LF line ends, one write and one flush per event.
type StreamControl struct {
	// Delay is waited before every event but the first.
	Delay time.Duration
	// FirstPause is waited after the first event is flushed.
	FirstPause time.Duration
	// CRLF ends lines with "\r\n" instead of "\n".
	CRLF bool
	// Split writes one event (or every event) in two flushed writes.
	Split Split
	// ResetAfter, when positive, resets the connection (hijack, then
	// close with SO_LINGER 0 so the client sees a reset; on HTTP/2 the
	// stream is aborted) right after that many events were flushed.
	ResetAfter int
	// Endless streams content chunks until the client goes away; no finish
	// chunk, usage or [DONE] is ever sent.
	Endless bool
}

// Request headers that override Options fields other than Stream.
const (
	// HeaderLatency sets Options.Latency (a Go duration).
	HeaderLatency = "X-Fake-Latency"
	// HeaderNoUsage sets Options.NoUsage ("true" or "1").
	HeaderNoUsage = "X-Fake-No-Usage"
)

// Split cuts an event's bytes (its "event:" and "data:" lines and the
// blank line that ends it, with their line ends) in two writes, each
// flushed, with Delay between them.
type Split struct {
	// Event is the event to split, counting from 1; 0 splits every event;
	// a negative number counts from the end (-1 is the last event: [DONE],
	// or response.completed; -2 is a chat stream's usage-only chunk when
	// the request asked for usage). Negative numbers never match in an
	// endless stream.
	Event int
	// At is the byte offset of the cut; a negative offset counts from the
	// event's end (-1 cuts before its last byte, which in a CRLF stream
	// falls between "\r" and "\n"). Zero with After empty: no split.
	At int
	// After, when set, cuts right after its first occurrence in the event
	// (an event without it is not split). It takes precedence over At.
	After string
	// Delay is waited between the two writes.
	Delay time.Duration
}

// override returns a copy of c with the request's X-Fake-* headers
// applied.
func (c StreamControl) override(h http.Header) StreamControl {
	durations := []struct {
		name string
		dst  *time.Duration
	}{
		{HeaderDelay, &c.Delay},
		{HeaderFirstPause, &c.FirstPause},
		{HeaderSplitDelay, &c.Split.Delay},
	}
	for _, d := range durations {
		if v, err := time.ParseDuration(h.Get(d.name)); err == nil && v >= 0 {
			*d.dst = v
		}
	}
	ints := []struct {
		name string
		dst  *int
	}{
		{HeaderSplitEvent, &c.Split.Event},
		{HeaderSplitAt, &c.Split.At},
		{HeaderResetAfter, &c.ResetAfter},
	}
	for _, i := range ints {
		if v, err := strconv.Atoi(h.Get(i.name)); err == nil {
			*i.dst = v
		}
	}
	if v, err := strconv.ParseBool(h.Get(HeaderCRLF)); err == nil {
		c.CRLF = v
	}
	if v, err := strconv.ParseBool(h.Get(HeaderEndless)); err == nil {
		c.Endless = v
	}
	if v := h.Get(HeaderSplitAfter); v != "" {
		c.Split.After = v
	}
	return c
}

// errStreamEnded stops a stream whose client went away or whose
// connection the fake reset.
var errStreamEnded = errors.New("stream ended")

// streamer writes one server-sent event stream as its StreamControl says.
type streamer struct {
	w     http.ResponseWriter
	out   io.Writer    // w, or gz over it
	gz    *gzip.Writer // non-nil when the answer is compressed
	rc    *http.ResponseController
	ctx   context.Context
	ctl   StreamControl
	hold  chan struct{}
	total int // events the stream will send; -1 when endless
	sent  int
}

// startStream writes the stream's headers and returns its streamer.
func startStream(w http.ResponseWriter, r *http.Request, c *call, total int) *streamer {
	if c.ctl.Endless {
		total = -1
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	setAnswerHeaders(w.Header(), c)
	st := &streamer{
		w: w, out: w, rc: http.NewResponseController(w), ctx: r.Context(), ctl: c.ctl,
		hold: c.hold, total: total,
	}
	if compress(w) {
		w.Header().Set("Content-Encoding", "gzip")
		st.gz = gzip.NewWriter(w)
		st.out = st.gz
	}
	w.WriteHeader(http.StatusOK)
	_ = st.rc.Flush() // a client that left is noticed at the first event
	return st
}

// close ends a compressed stream with the gzip trailer.
func (st *streamer) close() {
	if st.gz != nil {
		_ = st.gz.Close()
		_ = st.rc.Flush()
	}
}

// event writes one event (name may be empty) with data as its data line.
func (st *streamer) event(name string, data []byte) error {
	if st.sent > 0 && !st.wait(st.ctl.Delay) {
		return errStreamEnded
	}
	st.sent++

	// Frame the event.
	nl := "\n"
	if st.ctl.CRLF {
		nl = "\r\n"
	}
	var b bytes.Buffer
	if name != "" {
		b.WriteString("event: " + name + nl)
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString(nl + nl)

	// Write it, in two parts when it is to be split.
	msg := b.Bytes()
	if cut := st.cut(msg); cut > 0 {
		if err := st.write(msg[:cut]); err != nil {
			return err
		}
		if !st.wait(st.ctl.Split.Delay) {
			return errStreamEnded
		}
		msg = msg[cut:]
	}
	if err := st.write(msg); err != nil {
		return err
	}

	// Pause after the first event, and reset when told.
	if st.sent == 1 {
		if !st.wait(st.ctl.FirstPause) || !st.waitHold() {
			return errStreamEnded
		}
	}
	if st.ctl.ResetAfter > 0 && st.sent == st.ctl.ResetAfter {
		resetConn(st.rc)
		return errStreamEnded
	}
	return nil
}

// cut returns where to split the current event, 0 for nowhere.
func (st *streamer) cut(msg []byte) int {
	sp := st.ctl.Split
	switch {
	case sp.At == 0 && sp.After == "":
		return 0
	case sp.Event > 0 && sp.Event != st.sent:
		return 0
	case sp.Event < 0 && (st.total < 0 || st.total+1+sp.Event != st.sent):
		return 0
	}
	at := sp.At
	if sp.After != "" {
		i := bytes.Index(msg, []byte(sp.After))
		if i < 0 {
			return 0
		}
		at = i + len(sp.After)
	} else if at < 0 {
		at += len(msg)
	}
	if at <= 0 || at >= len(msg) {
		return 0
	}
	return at
}

// write writes p and flushes it.
func (st *streamer) write(p []byte) error {
	if _, err := st.out.Write(p); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	if st.gz != nil {
		if err := st.gz.Flush(); err != nil {
			return fmt.Errorf("flush compressed event: %w", err)
		}
	}
	if err := st.rc.Flush(); err != nil {
		return fmt.Errorf("flush event: %w", err)
	}
	return nil
}

// wait waits d and reports false when the client went away first.
func (st *streamer) wait(d time.Duration) bool { return sleep(st.ctx, d) }

// sleep waits d and reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitHold waits for Hold's release, if the stream started under Hold.
func (st *streamer) waitHold() bool {
	if st.hold == nil {
		return true
	}
	select {
	case <-st.hold:
		return true
	case <-st.ctx.Done():
		return false
	}
}

// resetConn drops the connection so that the client sees a reset: on
// HTTP/1 it is hijacked and closed at once with SO_LINGER 0; where
// hijacking is not supported (HTTP/2) the handler is aborted, which resets
// the stream.
func resetConn(rc *http.ResponseController) {
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // net/http's documented way to abort a response
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
