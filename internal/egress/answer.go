package egress

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"sync"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/usage"
)

// maxErrorBody bounds an upstream error answer the handler reads, cleans
// of keys and passes on.
const maxErrorBody = 64 << 10

// copyBufSize is the read size of an answer's body.
const copyBufSize = 32 << 10

// copyBufs recycles the answers' copy buffers.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// deliver passes the last attempt's answer to the app, if it is still
// there, and notes how the call ended.
func (c *call) deliver(w http.ResponseWriter, a answer) {
	switch {
	case a.resp == nil:
		c.deliverNoAnswer(w, a.err)
	case a.resp.StatusCode >= 200 && a.resp.StatusCode < 300:
		c.deliverSuccess(w, a.resp)
	default:
		c.deliverFailure(w, a.resp)
	}
}

// deliverNoAnswer answers a transport error: 504 when time ran out, else
// 502.
func (c *call) deliverNoAnswer(w http.ResponseWriter, err error) {
	c.exit, c.failure = c.exitFor(err), err
	c.outcome = keys.Outcome{}
	if c.watch.gone.Load() {
		return
	}
	e := errUnreachable
	if c.exit == outbox.ExitTimeout {
		e = errUpstreamTimeout
	}
	e.write(w)
	c.appStatus = e.status
}

// deliverFailure passes an error answer on, read whole (bounded),
// decoded and cleaned of every injected key, without the upstream's
// Content-Encoding and Content-Length.
func (c *call) deliverFailure(w http.ResponseWriter, resp *http.Response) {
	h := c.h
	c.status = resp.StatusCode
	body, err := readErrorBody(resp)
	c.outcome = keys.OutcomeFromResponse(resp.StatusCode, resp.Header, body, h.opts.Now())
	switch {
	case err != nil:
		c.exit, c.failure = c.exitFor(err), err
	case resp.StatusCode >= 500:
		c.exit = outbox.ExitUpstreamError
	default:
		c.exit = outbox.ExitComplete
	}
	if c.watch.gone.Load() {
		return
	}

	if err != nil || len(body) > maxErrorBody {
		e := errUpstreamBody
		if c.exit == outbox.ExitTimeout {
			e = errUpstreamTimeout
		}
		e.write(w)
		c.appStatus = e.status
		return
	}
	h.copyAnswerHeader(w.Header(), resp.Header)
	w.Header().Del("Content-Length")
	w.WriteHeader(resp.StatusCode)
	c.appStatus = resp.StatusCode
	_, _ = w.Write(h.redact.bytes(body))
}

// deliverSuccess streams a 2xx answer to the app through a metering Body,
// flushing event streams after every read. When the app goes away, the
// rest of the answer is drained (bounded) for its usage.
func (c *call) deliverSuccess(w http.ResponseWriter, resp *http.Response) {
	h := c.h
	c.status = resp.StatusCode
	if err := decodeAnswer(resp); err != nil {
		c.deliverUnreadable(w, resp, err)
		return
	}
	c.cut = newStreamCut(c.keys)
	stream := isEventStream(resp.Header.Get("Content-Type"))
	strip := stream && c.req.strip
	c.body = usage.NewBody(resp.Body, usage.Options{Stream: stream, StripUsageChunk: strip})

	if !c.watch.gone.Load() {
		h.copyAnswerHeader(w.Header(), resp.Header)
		if strip {
			w.Header().Del("Content-Length")
		}
		w.WriteHeader(resp.StatusCode)
		c.appStatus = resp.StatusCode
		if stream {
			c.flush(w)
		}
	}
	lost, err := c.pump(w, stream)
	c.closeBody()
	c.outcome = keys.OutcomeFromResponse(resp.StatusCode, resp.Header, nil, h.opts.Now())
	switch {
	case err != nil:
		c.exit, c.failure = c.exitFor(err), err
		c.broken = c.appStatus != 0 && !c.watch.gone.Load()
	case lost:
		c.exit = outbox.ExitClientGone
	default:
		c.exit = outbox.ExitComplete
	}
}

// deliverUnreadable answers a 2xx answer the egress cannot decode with
// its own error: it could neither be metered nor cleaned of keys. The
// call is charged as an answer without usage.
func (c *call) deliverUnreadable(w http.ResponseWriter, resp *http.Response, err error) {
	_ = resp.Body.Close()
	c.outcome = keys.OutcomeFromResponse(resp.StatusCode, resp.Header, nil, c.h.opts.Now())
	c.exit, c.failure = outbox.ExitUpstreamError, err
	if c.watch.gone.Load() {
		return
	}
	errUpstreamBody.write(w)
	c.appStatus = errUpstreamBody.status
}

// pump copies the answer to the app until its end. Once the app is gone
// it drains the rest instead, at most DrainBytes (DrainTimeout is
// enforced by the upstream context), and reports whether part of the
// answer never reached the app (lost): a write that failed, or anything
// the drain had to read. An app that hangs up right after the last event
// (clients close at "[DONE]", before the upstream's end is read) lost
// nothing. It returns nil at a clean end.
func (c *call) pump(w http.ResponseWriter, stream bool) (lost bool, err error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for !c.watch.gone.Load() {
		n, rerr := c.body.Read(buf)
		if n > 0 && c.toApp(w, c.cut.next(buf[:n]), stream) {
			lost = true
		}
		if rerr == io.EOF {
			if c.toApp(w, c.cut.flush(), stream) {
				lost = true
			}
			return lost, nil
		}
		if rerr != nil {
			return lost, rerr
		}
	}
	drained, err := c.body.Drain(c.h.opts.DrainBytes)
	held := len(c.cut.flush()) > 0 // bytes kept back for key masking
	return lost || drained > 0 || held || err != nil, err
}

// toApp writes b to the app, flushing an event stream, and reports
// whether it was lost (the app is gone).
func (c *call) toApp(w http.ResponseWriter, b []byte, stream bool) (lost bool) {
	if len(b) == 0 {
		return false
	}
	switch _, err := w.Write(b); {
	case c.watch.gone.Load():
		return true
	case err != nil:
		c.watch.leave()
		return true
	case stream:
		c.flush(w)
	}
	return false
}

// flush sends what was written; a failure means the app is gone.
func (c *call) flush(w http.ResponseWriter) {
	err := http.NewResponseController(w).Flush()
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		c.watch.leave()
	}
}

// closeBody closes the answer's body, once, and keeps its Result.
func (c *call) closeBody() {
	if c.body == nil {
		return
	}
	_ = c.body.Close()
	c.result = c.body.Result()
	c.body = nil
}

// droppedAnswerHeaders never reach the app besides hop-by-hop headers:
// the upstream's cookies and alternative services are not the egress's.
var droppedAnswerHeaders = []string{"Set-Cookie", "Alt-Svc"}

// copyAnswerHeader copies the upstream's answer headers to dst, without
// hop-by-hop headers and with injected keys cut from every value.
func (h *Handler) copyAnswerHeader(dst, src http.Header) {
	hd := src.Clone()
	removeHopHeaders(hd)
	for _, name := range droppedAnswerHeaders {
		hd.Del(name)
	}
	for name, vals := range hd {
		for i, v := range vals {
			vals[i] = h.redact.string(v)
		}
		dst[name] = vals
	}
}

// isEventStream reports whether a Content-Type is a server-sent event
// stream.
func isEventStream(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}

// readBounded reads at most limit bytes of r.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, limit))
}
