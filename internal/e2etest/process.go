package e2etest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// maxShownOutput bounds how much of a process's output a failed test
// prints (the tail is kept).
const maxShownOutput = 64 << 10

// Spec describes a process to start.
type Spec struct {
	Name string   // shown in failure output, e.g. "sidecar"
	Path string   // the program
	Args []string // its arguments
	Dir  string   // working directory; empty: the test's
	// Env is added to a copy of the test's environment from which every
	// ZIMMER_* variable was removed, so the caller decides all of them.
	Env []string
}

// Stream names one of a process's output streams.
type Stream string

// The output streams Process captures.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Line is one captured line of output.
type Line struct {
	Stream Stream
	Text   string
}

// Process is a started program in its own process group, with its output
// captured line by line. Its methods are safe for concurrent use.
type Process struct {
	Name string
	Pid  int

	cmd      *exec.Cmd
	readers  sync.WaitGroup // the two output copiers
	exited   chan struct{}  // closed once Wait returned
	exitErr  error          // set before exited is closed
	mu       sync.Mutex
	lines    []Line        // guarded by mu
	changed  chan struct{} // guarded by mu; closed and replaced per line
	killOnce sync.Once
}

// Start starts spec's program. t.Cleanup kills its whole process group
// (whatever state the test left it in) and, when t failed, logs its
// captured output.
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(cleanEnv(), spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", spec.Name, err)
	}

	p := &Process{
		Name:    spec.Name,
		Pid:     cmd.Process.Pid,
		cmd:     cmd,
		exited:  make(chan struct{}),
		changed: make(chan struct{}),
	}
	p.readers.Add(2)
	go p.copyLines(Stdout, stdout)
	go p.copyLines(Stderr, stderr)
	go func() {
		// Wait closes the pipes only after the copiers are done with
		// them, so they read everything first.
		p.readers.Wait()
		p.exitErr = cmd.Wait()
		close(p.exited)
		p.notify()
	}()

	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", p.Name, p.Pid, p.tail(maxShownOutput))
		}
	})
	return p
}

// cleanEnv is the test's environment without ZIMMER_* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ZIMMER_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *Process) copyLines(s Stream, r io.Reader) {
	defer p.readers.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, Line{Stream: s, Text: sc.Text()})
		p.mu.Unlock()
		p.notify()
	}
	// A read error means the process is gone; drain what is left so it
	// never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// notify wakes every WaitLine.
func (p *Process) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Lines returns a copy of every line captured so far.
func (p *Process) Lines() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Line(nil), p.lines...)
}

// Output returns every captured line, each prefixed with its stream.
func (p *Process) Output() string {
	var b strings.Builder
	for _, l := range p.Lines() {
		fmt.Fprintf(&b, "[%s] %s\n", l.Stream, l.Text)
	}
	return b.String()
}

func (p *Process) tail(n int) string {
	out := p.Output()
	if len(out) > n {
		out = "...\n" + out[len(out)-n:]
	}
	return out
}

// ErrExited is returned by WaitLine when the process ended before a
// matching line appeared.
var ErrExited = errors.New("process exited")

// WaitLine waits up to timeout for a line (on either stream) for which
// match returns true, and returns it. Lines captured before the call
// count.
func (p *Process) WaitLine(timeout time.Duration, match func(Line) bool) (Line, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		p.mu.Lock()
		lines, changed := p.lines[seen:], p.changed
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-p.exited:
			// One more look: lines may have arrived with the exit.
			for _, l := range p.Lines()[seen:] {
				if match(l) {
					return l, nil
				}
			}
			return Line{}, fmt.Errorf("%s: %w (%v)", p.Name, ErrExited, p.exitErr)
		case <-changed:
		case <-deadline.C:
			return Line{}, fmt.Errorf("%s: no matching line within %s", p.Name, timeout)
		}
	}
}

// Signal sends sig to the process itself (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(p.Pid, sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the whole process group and waits for the process
// to be reaped. It is idempotent and safe after the process exited.
func (p *Process) Kill() {
	p.killOnce.Do(func() {
		select {
		case <-p.exited:
			// Reaped already: the group id may belong to someone else.
		default:
			_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		}
	})
	<-p.exited
}

// Exited is closed once the process has ended and its output is read.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits up to timeout for the process to end and returns its exit
// code (-1 when a signal ended it).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.exited:
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
	return p.cmd.ProcessState.ExitCode(), nil
}
