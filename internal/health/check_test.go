package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestDescribeErr(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error {
		// What http.Client returns: the URL, with its secrets, inside.
		return &url.Error{Op: "Get", URL: "http://u:pw@127.0.0.1/x?token=t0k", Err: err}
	}
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"deadline", wrap(context.DeadlineExceeded), "timeout after 2s"},
		{"refused", wrap(opErr(syscall.ECONNREFUSED)), "connection refused"},
		{"reset", wrap(opErr(syscall.ECONNRESET)), "connection reset"},
		{"dns", wrap(&net.DNSError{Err: "no such host", Name: "app"}), "dns lookup failed"},
		{"eof", wrap(io.EOF), "connection closed"},
		{"unexpected eof", wrap(io.ErrUnexpectedEOF), "connection closed"},
		{"other", wrap(errors.New("secret t0k in a message")), "request failed"},
		{"wrapped", fmt.Errorf("x: %w", wrap(context.DeadlineExceeded)), "timeout after 2s"},
	}
	for _, tt := range tests {
		if got := describeErr(tt.err, 2*time.Second); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
