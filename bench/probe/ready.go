package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyReport is the result of probe ready.
type readyReport struct {
	Runs    int     `json:"runs"`
	Ready   summary `json:"ready"`
	RSSKiB  []int64 `json:"rss_kib"` // per run, -settle after ready
	Command string  `json:"command"`
}

// runReady starts the command after "--" -n times and times each start
// until -url answers 2xx.
func runReady(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ready", flag.ContinueOnError)
	rawURL := fs.String("url", "", "URL that answers 2xx once the command is ready")
	n := fs.Int("n", 5, "how many starts")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on one start after this")
	settle := fs.Duration("settle", time.Second, "wait after ready before reading RSS")
	logFile := fs.String("log", "", "append the command's output here (default: discard)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		return errors.New("ready: the command to start follows --")
	}
	if _, err := checkTarget(*rawURL); err != nil {
		return err
	}
	if *n < 1 || *n > 100 {
		return fmt.Errorf("ready: -n must be in [1, 100], got %d", *n)
	}
	out := io.Discard
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("ready: open log: %w", err)
		}
		defer f.Close()
		out = f
	}

	rep := readyReport{Command: strings.Join(cmdArgs, " ")}
	var times []time.Duration
	for range *n {
		d, rss, err := startOnce(ctx, cmdArgs, *rawURL, *timeout, *settle, out)
		if err != nil {
			return fmt.Errorf("ready: %w", err)
		}
		times = append(times, d)
		rep.RSSKiB = append(rep.RSSKiB, rss)
	}
	rep.Runs, rep.Ready = len(times), summarize(times)
	return writeJSON(stdout, rep)
}

// startOnce starts the command, polls url every millisecond until a 2xx
// answer, reads the process's RSS settle later, and stops it.
func startOnce(ctx context.Context, args []string, url string,
	timeout, settle time.Duration, out io.Writer) (time.Duration, int64, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	client := &http.Client{Timeout: 200 * time.Millisecond}
	defer client.CloseIdleConnections()

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stopProcess(cmd, exited)

	deadline := start.Add(timeout)
	for {
		if answered(ctx, client, url) {
			break
		}
		select {
		case err := <-exited:
			exited <- err // for stopProcess
			return 0, 0, fmt.Errorf("%s exited before it was ready: %v", args[0], err)
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s not ready within %s", args[0], timeout)
		}
	}
	ready := time.Since(start)

	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	return ready, rssKiB(cmd.Process.Pid), nil
}

// answered reports whether one GET of url got a 2xx answer.
func answered(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// stopProcess sends SIGTERM and waits up to 30 s for the exit, then kills.
func stopProcess(cmd *exec.Cmd, exited chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// rssKiB returns the resident set size of pid from /proc, 0 when unknown
// (not Linux, or the process is gone).
func rssKiB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(
				strings.TrimSpace(v), "kB")), 10, 64)
			return kib
		}
	}
	return 0
}
