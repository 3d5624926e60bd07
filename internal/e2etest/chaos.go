package e2etest

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// tcpEstablished is the state code of an established socket in
// /proc/net/tcp.
const tcpEstablished = "01"

// EstablishedOn counts the established IPv4 TCP connections whose local
// port is port: on a server's port, the connections it has accepted and
// not closed. Linux only (it reads /proc/net/tcp); the count covers the
// test's whole network namespace.
func EstablishedOn(port int) (int, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, fmt.Errorf("established on %d: %w", port, err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // the header line
	for sc.Scan() {
		// sl local_address rem_address st ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpEstablished {
			continue
		}
		if strings.HasSuffix(fields[1], want) {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("established on %d: %w", port, err)
	}
	return n, nil
}

// CountLines counts the lines of p's output (either stream) that contain
// sub.
func (p *Process) CountLines(sub string) int {
	n := 0
	for _, l := range p.Lines() {
		if strings.Contains(l.Text, sub) {
			n++
		}
	}
	return n
}

// WaitStopped waits until every thread of p is stopped (after SIGSTOP):
// kill returns once the signal is queued, and a thread already running
// can still answer a request for a moment after that.
func (p *Process) WaitStopped(t testing.TB) {
	t.Helper()
	Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		dir := fmt.Sprintf("/proc/%d/task", p.Pid)
		tasks, err := os.ReadDir(dir)
		if err != nil || len(tasks) == 0 {
			return false, fmt.Sprintf("read %s: %v", dir, err)
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
			if err != nil {
				return false, err.Error()
			}
			// The state follows the command name in parentheses.
			i := strings.LastIndexByte(string(stat), ')')
			if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
				return false, p.Name + " thread " + task.Name() + " still running"
			}
		}
		return true, ""
	})
}
