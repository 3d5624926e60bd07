package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// idleReport is printed once every connection is open (or failed).
type idleReport struct {
	Open     int    `json:"open"`
	Failed   int    `json:"failed"`
	FirstErr string `json:"first_error,omitempty"`
	OpenMS   int64  `json:"open_ms"` // time to open them all
}

// maxIdle bounds -n: each connection holds a file descriptor here and one
// in the server.
const maxIdle = 50_000

// runIdle opens -n keep-alive connections to -url's host, sends one GET
// of -url on each and reads the answer, so that each ends idle in the
// server's keep-alive state; reports; and holds them until -hold passes
// or ctx ends.
func runIdle(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	rawURL := fs.String("url", "", "URL to GET once on every connection")
	n := fs.Int("n", 10_000, "connections to open")
	parallel := fs.Int("parallel", 128, "connections being opened at once")
	hold := fs.Duration("hold", time.Minute, "how long to keep them open")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := checkTarget(*rawURL)
	if err != nil {
		return err
	}
	switch {
	case *n < 1 || *n > maxIdle:
		return fmt.Errorf("idle: -n must be in [1, %d], got %d", maxIdle, *n)
	case *parallel < 1:
		return fmt.Errorf("idle: -parallel must be positive, got %d", *parallel)
	case *hold <= 0 || *hold > time.Hour:
		return fmt.Errorf("idle: -hold must be in (0, 1h], got %s", *hold)
	}
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: probe\r\n\r\n",
		u.RequestURI(), u.Host)

	start := time.Now()
	conns, rep := openIdle(ctx, u.Host, request, *n, *parallel)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	rep.OpenMS = time.Since(start).Milliseconds()
	if err := writeJSON(stdout, rep); err != nil {
		return err
	}
	if rep.Open == 0 {
		return errors.New("idle: no connection could be opened")
	}

	t := time.NewTimer(*hold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// openIdle opens n connections, parallel at a time, each after one
// request answered 2xx with keep-alive.
func openIdle(ctx context.Context, host, request string, n, parallel int) (
	[]net.Conn, idleReport) {
	var (
		mu    sync.Mutex
		conns []net.Conn
		rep   idleReport
		wg    sync.WaitGroup
	)
	slots := make(chan struct{}, parallel)
	for range n {
		if ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			c, err := openOne(ctx, host, request)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Failed++
				if rep.FirstErr == "" {
					rep.FirstErr = err.Error()
				}
				return
			}
			conns = append(conns, c)
			rep.Open++
		}()
	}
	wg.Wait()
	return conns, rep
}

// openOne dials host, sends request and reads a 2xx answer that leaves
// the connection open.
func openOne(ctx context.Context, host, request string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("read answer: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 || resp.Close {
		_ = c.Close()
		return nil, fmt.Errorf("answer %d (close %t), want 2xx kept alive",
			resp.StatusCode, resp.Close)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
