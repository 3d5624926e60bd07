package fakeopenai

import (
	"net/http"
	"slices"
)

// Record is one request the fake received.
type Record struct {
	// Seq numbers records from 1 in arrival order.
	Seq    int
	Method string
	// Path is the URL path; Query the raw query string.
	Path  string
	Query string
	// Key is the key the fake read (from Authorization, else api-key);
	// empty when none.
	Key string
	// HasAuthorization and HasAPIKey report whether each header was sent.
	HasAuthorization bool
	HasAPIKey        bool
	// Header is a copy of every request header.
	Header http.Header
	// Body is the request body as received (up to 8 MiB).
	Body []byte
	// Status is the status answered; zero while the handler runs, -1
	// when the connection was dropped before any answer.
	Status int
}

// KeyStats counts the requests that presented one key.
type KeyStats struct {
	// Requests counts every request with the key, answered or not.
	Requests int
	// OK counts those answered 2xx, Errors the others.
	OK     int
	Errors int
	// PromptTokens and CompletionTokens add up the usage of the answers
	// started with the key (embeddings count prompt tokens only). A stream
	// cut short, or answered without usage (NoUsage), still counts whole;
	// an endless stream counts its configured words.
	PromptTokens     int64
	CompletionTokens int64
}

// record appends a request's record and returns its Seq.
func (s *Server) record(r *http.Request, key string, body []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, hasAPIKey := r.Header["Api-Key"]
	seq := s.dropped + len(s.records) + 1
	s.records = append(s.records, Record{
		Seq:              seq,
		Method:           r.Method,
		Path:             r.URL.Path,
		Query:            r.URL.RawQuery,
		Key:              key,
		HasAuthorization: r.Header.Get("Authorization") != "",
		HasAPIKey:        hasAPIKey,
		Header:           r.Header.Clone(),
		Body:             body,
	})
	s.statsLocked(key).Requests++
	return seq
}

// setStatus stores the status answered to record seq and counts it.
// Status -1 means no answer was written (the connection was dropped).
func (s *Server) setStatus(seq int, key string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := seq - 1 - s.dropped
	if idx < 0 || idx >= len(s.records) || s.records[idx].Status != 0 {
		return // forgotten by Reset
	}
	if status == 0 { // the connection was dropped before any answer
		status = -1
	}
	s.records[idx].Status = status
	if status >= 200 && status < 300 {
		s.statsLocked(key).OK++
	} else {
		s.statsLocked(key).Errors++
	}
}

// statsLocked returns key's counters, creating them. s.mu must be held.
func (s *Server) statsLocked(key string) *KeyStats {
	st := s.stats[key]
	if st == nil {
		st = &KeyStats{}
		s.stats[key] = st
	}
	return st
}

// Requests returns a copy of every record, in arrival order.
func (s *Server) Requests() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, len(s.records))
	for i, rec := range s.records {
		rec.Header = rec.Header.Clone()
		rec.Body = slices.Clone(rec.Body)
		out[i] = rec
	}
	return out
}

// Stats returns the counters of key ("" counts requests without a key).
func (s *Server) Stats(key string) KeyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stats[key]; st != nil {
		return *st
	}
	return KeyStats{}
}

// Reset forgets every record and counter (keys keep their states).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped += len(s.records)
	s.records = nil
	s.stats = make(map[string]*KeyStats)
}
