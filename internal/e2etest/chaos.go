package e2etest

import (
	"bufio"
	"fmt"
	"os"
	"strings"
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
