package egress

import (
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
)

// errAnswerEncoding: an answer in a content encoding the egress cannot decode
// (it asks for none; this one came anyway).
var errAnswerEncoding = errors.New("upstream answer in an unreadable content encoding")

// decodeAnswer makes resp's body readable as the app is to get it: a
// body in gzip or deflate (zlib) is decoded as it is read, and the
// answer's Content-Encoding and Content-Length are dropped. The upstream
// is asked for an identity encoding, but a body it compresses anyway
// must still be metered and cleaned of keys before the app sees it. An
// encoding the egress cannot decode (br, zstd, layered encodings) is
// errAnswerEncoding, and resp is left as it is.
func decodeAnswer(resp *http.Response) error {
	var enc []string
	for _, v := range resp.Header.Values("Content-Encoding") {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.ToLower(strings.TrimSpace(e)); e != "" && e != "identity" {
				enc = append(enc, e)
			}
		}
	}
	switch {
	case len(enc) == 0:
		return nil
	case len(enc) > 1:
		return errAnswerEncoding
	}

	var open func(io.Reader) (io.ReadCloser, error)
	switch enc[0] {
	case "gzip", "x-gzip":
		open = func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }
	case "deflate":
		open = zlib.NewReader
	default:
		return errAnswerEncoding
	}
	resp.Body = &decodedBody{src: resp.Body, open: open}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	return nil
}

// decodedBody decodes src, opening the decoder at the first Read (which
// reads the compressed header), so that nothing blocks before. Close
// closes src, which ends a Read blocked on it.
type decodedBody struct {
	src  io.ReadCloser
	open func(io.Reader) (io.ReadCloser, error)
	dec  io.ReadCloser
	err  error
}

func (d *decodedBody) Read(p []byte) (int, error) {
	if d.dec == nil && d.err == nil {
		// A body that ends cleanly before any byte (HEAD, 204) is
		// empty, not broken; a cut one fails with the cut's error.
		d.dec, d.err = d.open(d.src)
	}
	if d.err != nil {
		return 0, d.err
	}
	return d.dec.Read(p)
}

func (d *decodedBody) Close() error { return d.src.Close() }

// maxCompressedErrorBody bounds the compressed bytes read of an error
// answer: past it the answer is taken as too long.
const maxCompressedErrorBody = 2 * maxErrorBody

// readErrorBody reads an error answer's body, decoded, at most
// maxErrorBody+1 bytes (more means too long), and closes it. An encoding
// the egress cannot decode is errAnswerEncoding.
func readErrorBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxCompressedErrorBody), resp.Body}
	if err := decodeAnswer(resp); err != nil {
		return nil, err
	}
	return readBounded(resp.Body, maxErrorBody+1)
}
