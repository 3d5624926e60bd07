package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// rawFile writes 4 KiB and fdatasyncs it per "debit": the disk's flush
// rate, the ceiling of any store that flushes once per transaction.
type rawFile struct {
	mu   sync.Mutex
	f    *os.File
	buf  []byte
	next int64
}

func openRaw(dir string, _ int, _ int64) (debiter, error) {
	f, err := os.OpenFile(filepath.Join(dir, "raw"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &rawFile{f: f, buf: make([]byte, 4096)}, nil
}

func (r *rawFile) Debit(int, int64) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	off := (r.next % 256) * 4096 // a 1 MiB ring: the file stops growing
	r.next++
	if _, err := r.f.WriteAt(r.buf, off); err != nil {
		return false, fmt.Errorf("write: %w", err)
	}
	if err := syscall.Fdatasync(int(r.f.Fd())); err != nil {
		return false, fmt.Errorf("fdatasync: %w", err)
	}
	return true, nil
}

func (r *rawFile) Check(int64) error {
	if err := r.f.Close(); err != nil {
		return err
	}
	return errNoCheck
}
