package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// newPlainProxy returns the benchmarks' reference Go proxy: the standard
// library's ReverseProxy to target with the transport tuned (idle
// connections per host raised to 256) and a pool of copy buffers, and
// nothing else. It is the "net/http ReverseProxy, transport tuned" row of
// perf-anchors.md, re-measured in the same run as the sidecar. The target
// must be a loopback http URL.
func newPlainProxy(target string) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("proxy target: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("proxy target: scheme must be http, got %q", u.Scheme)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("proxy target: host %q is not a loopback IP", u.Hostname())
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: bufferPool{},
	}, nil
}

// copyBufferSize is the size of the proxy's pooled copy buffers.
const copyBufferSize = 32 << 10

var buffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// bufferPool lends 32 KiB copy buffers to the ReverseProxy.
type bufferPool struct{}

func (bufferPool) Get() []byte { return buffers.Get().(*[copyBufferSize]byte)[:] }

func (bufferPool) Put(b []byte) {
	if len(b) == copyBufferSize {
		buffers.Put((*[copyBufferSize]byte)(b))
	}
}
