package usage

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// readBufSize is the upstream read size of a stripping Body.
const readBufSize = 32 << 10

// Body wraps an upstream answer body and meters it as the app reads it.
//
// Without StripUsageChunk (and for JSON answers) Read returns exactly the
// upstream's bytes, in the upstream's read sizes, holding none back: each
// read is observed after it arrived and before it is returned.
//
// With StripUsageChunk in stream mode, bytes are forwarded one whole
// event at a time: an event's bytes reach the reader as soon as its
// closing blank line has arrived, and a usage-only chunk's bytes (with
// its line terminators) are dropped instead. What the reader gets is then
// exactly the upstream's bytes minus those chunks. Bytes of an event over
// the size cap, and of an event unfinished when the upstream ends, are
// forwarded unchanged, never dropped. Until an event is complete its
// bytes are held, at most about three times MaxEventBytes.
//
// Read and Drain must not be called concurrently with each other; Close
// and Result may be called from any goroutine at any time. Close waits
// for a Read or Drain in progress to return, so the bytes it got are
// metered; the upstream's Close must unblock a pending read (the body of
// an http.Response does).
type Body struct {
	src   io.ReadCloser
	meter *Meter
	strip bool
	eof   atomic.Bool
	rmu   sync.Mutex // held by Read and Drain; Close waits for it

	// Stripping state, owned by the reading goroutine.
	buf     []byte // upstream read buffer
	held    []byte // bytes of the current, unfinished event
	out     []byte // bytes ready for the reader
	off     int    // read position in out
	err     error  // the upstream's error, returned once out is drained
	cur     []byte // the chunk being framed
	seg     int    // start of cur's bytes not yet forwarded or held
	passing bool   // the current event is over the cap: forward as it comes
	afterCR bool   // the last event ended on "\r" at the end of a chunk
	dropped bool   // the last event was withheld
}

// NewBody returns a Body reading from src. The Body owns src: Close
// closes it.
func NewBody(src io.ReadCloser, opts Options) *Body {
	b := &Body{src: src, meter: NewMeter(opts)}
	if opts.Stream && opts.StripUsageChunk {
		b.strip = true
		b.buf = make([]byte, readBufSize)
		b.meter.framer.onBlock = b.block
		b.meter.framer.onOversize = func() {
			b.meter.oversize()
			b.out = append(b.out, b.held...)
			b.held = b.held[:0]
			b.passing = true
		}
	}
	return b
}

// Read reads the answer as the app should see it.
func (b *Body) Read(p []byte) (int, error) {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	if !b.strip {
		n, err := b.src.Read(p)
		b.meter.Write(p[:n])
		if err != nil {
			b.end(err)
		}
		return n, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for b.off == len(b.out) {
		if b.err != nil {
			return 0, b.err
		}
		b.out, b.off = b.out[:0], 0
		n, err := b.src.Read(b.buf)
		b.process(b.buf[:n])
		if err != nil {
			b.out = append(b.out, b.held...)
			b.held = b.held[:0]
			b.err = err
			b.end(err)
		}
	}
	n := copy(p, b.out[b.off:])
	b.off += n
	return n, nil
}

// process frames one upstream chunk and sorts its bytes into forwarded,
// held and dropped.
func (b *Body) process(c []byte) {
	b.cur, b.seg = c, 0

	// A "\n" opening this chunk completes the "\r\n" that ended the last
	// event: it goes where that event went.
	if len(c) == 0 {
		return
	}
	if b.afterCR && c[0] == '\n' {
		if !b.dropped {
			b.out = append(b.out, '\n')
		}
		b.seg = 1
	}
	b.afterCR = false

	b.meter.mu.Lock()
	b.meter.write(c)
	b.meter.mu.Unlock()

	if b.passing {
		b.out = append(b.out, c[b.seg:]...)
	} else {
		b.held = append(b.held, c[b.seg:]...)
	}
	b.cur = nil
}

// block ends an event at offset end of the current chunk (m.mu held).
func (b *Body) block(end int) {
	c := b.cur
	if end < b.seg { // the event ended on bytes already sorted
		end = b.seg
	}
	drop := b.meter.usageOnly && !b.passing
	b.meter.usageOnly = false
	if drop {
		b.meter.res.Stripped++
	} else {
		b.out = append(b.out, b.held...)
		b.out = append(b.out, c[b.seg:end]...)
	}
	b.held = b.held[:0]
	b.passing = false
	b.dropped = drop
	b.seg = end

	// Keep a "\r\n" terminator whole with its event.
	if end > 0 && c[end-1] == '\r' {
		switch {
		case end == len(c):
			b.afterCR = true
		case c[end] == '\n':
			if !drop {
				b.out = append(b.out, '\n')
			}
			b.seg = end + 1
		}
	}
}

// end settles the meter once the upstream has ended.
func (b *Body) end(err error) {
	if err == io.EOF {
		b.eof.Store(true)
	}
	_ = b.meter.Close()
}

// Drain reads and meters the rest of the upstream without delivering it,
// for an app that went away before the end: at most limit bytes, then it
// stops with an error wrapping ErrTooLarge. It returns the bytes read;
// io.EOF is not an error. Bound it in time by calling Close from another
// goroutine, which ends a blocked upstream read.
func (b *Body) Drain(limit int64) (int64, error) {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	b.out, b.off, b.held = b.out[:0], 0, b.held[:0]
	if b.err != nil {
		return 0, nil
	}
	if b.strip {
		// Nothing goes to the app any more: frame without sorting.
		b.meter.mu.Lock()
		b.meter.framer.onBlock = nil
		b.meter.framer.onOversize = b.meter.oversize
		b.meter.mu.Unlock()
	}
	buf := b.buf
	if buf == nil {
		buf = make([]byte, readBufSize)
	}
	var n int64
	for {
		want := int64(len(buf))
		if left := limit - n; left < want {
			want = left
		}
		if want <= 0 {
			return n, fmt.Errorf("drain: %w", ErrTooLarge)
		}
		k, err := b.src.Read(buf[:want])
		n += int64(k)
		b.meter.Write(buf[:k])
		if err != nil {
			b.err = err
			b.end(err)
			if err == io.EOF {
				return n, nil
			}
			return n, fmt.Errorf("drain: %w", err)
		}
	}
}

// Close closes the upstream and settles the meter; an answer cut short
// is counted as truncated.
func (b *Body) Close() error {
	err := b.src.Close()
	b.rmu.Lock()
	_ = b.meter.Close()
	b.rmu.Unlock()
	return err
}

// Result returns what has been read so far, with EOF set once the
// upstream ended cleanly. Call it after Close for the final Usage.
func (b *Body) Result() Result {
	r := b.meter.Result()
	r.EOF = b.eof.Load()
	return r
}
