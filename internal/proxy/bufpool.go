package proxy

import "sync"

// copyBufSize matches ReverseProxy's own copy buffer.
const copyBufSize = 32 << 10

// bufferPool is an httputil.BufferPool of 32 KiB buffers. Buffers travel
// as *[]byte inside the pools so that Get and Put do not allocate; a
// second pool recycles the pointer boxes.
type bufferPool struct {
	bufs  sync.Pool // *[]byte holding a buffer
	boxes sync.Pool // empty *[]byte
}

func newBufferPool() *bufferPool {
	bp := &bufferPool{}
	bp.bufs.New = func() any {
		b := make([]byte, copyBufSize)
		return &b
	}
	bp.boxes.New = func() any { return new([]byte) }
	return bp
}

// Get returns a buffer of copyBufSize bytes.
func (bp *bufferPool) Get() []byte {
	box := bp.bufs.Get().(*[]byte)
	b := *box
	*box = nil
	bp.boxes.Put(box)
	return b
}

// Put returns a buffer; buffers of another size are dropped.
func (bp *bufferPool) Put(b []byte) {
	if cap(b) != copyBufSize {
		return
	}
	box := bp.boxes.Get().(*[]byte)
	*box = b[:copyBufSize]
	bp.bufs.Put(box)
}
