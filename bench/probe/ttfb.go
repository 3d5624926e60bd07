package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ttfbReport is the result of probe ttfb.
type ttfbReport struct {
	Runs   int     `json:"runs"`
	First  summary `json:"first_byte"` // request sent to first body byte
	Whole  summary `json:"whole"`      // request sent to end of body
	Bytes  int64   `json:"bytes"`      // body bytes of the last answer
	Non2xx int     `json:"non_2xx"`
}

// runTTFB sends -n GETs of -url one after another over one keep-alive
// connection and times the first byte of each body and its end.
func runTTFB(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ttfb", flag.ContinueOnError)
	rawURL := fs.String("url", "", "URL of a streamed answer")
	n := fs.Int("n", 100, "requests")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of one request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := checkTarget(*rawURL); err != nil {
		return err
	}
	if *n < 1 || *n > 100_000 {
		return fmt.Errorf("ttfb: -n must be in [1, 100000], got %d", *n)
	}
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: *timeout}

	var rep ttfbReport
	var first, whole []time.Duration
	buf := make([]byte, 32<<10)
	for range *n {
		f, w, size, status, err := timeOne(ctx, client, *rawURL, buf)
		if err != nil {
			return fmt.Errorf("ttfb: %w", err)
		}
		if status < 200 || status > 299 {
			rep.Non2xx++
			continue
		}
		first, whole = append(first, f), append(whole, w)
		rep.Bytes = size
	}
	rep.Runs, rep.First, rep.Whole = len(first), summarize(first), summarize(whole)
	return writeJSON(stdout, rep)
}

// timeOne sends one GET and returns the time to the first body byte, to
// the end of the body, the body's size and the status.
func timeOne(ctx context.Context, c *http.Client, url string, buf []byte) (
	first, whole time.Duration, size int64, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer resp.Body.Close()
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 && size == 0 {
			first = time.Since(start)
		}
		size += int64(k)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, 0, 0, 0, fmt.Errorf("read body: %w", rerr)
		}
	}
	return first, time.Since(start), size, resp.StatusCode, nil
}
