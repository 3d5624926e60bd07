// Package tlsconf terminates TLS for the sidecar's public listener.
//
// A [Manager] serves certificates in one of two modes. In files mode it
// serves a certificate and key read from disk and watches their directory:
// when the files change (a mounted Kubernetes Secret swaps its "..data"
// symlink), the next handshake gets the new pair, connections already open
// keep theirs, and a pair that does not load leaves the previous one in
// service. In acme mode it obtains certificates for the configured names
// from an ACME CA (Let's Encrypt by default) with certmagic, answering the
// HTTP-01 challenge on the plain HTTP listener and the TLS-ALPN-01 challenge
// on the TLS listener, and renews them in the background. Accounts,
// certificates and locks live in a storage directory that must persist
// across restarts and be shared by replicas, so that a restart reuses the
// stored certificate and replicas take turns instead of each asking the CA.
//
// [Manager.TLSConfig] accepts TLS 1.2 and later and offers HTTP/2.
// [Manager.HTTPHandler] is the whole plain HTTP listener: it answers ACME
// challenges and never redirects them, and redirects every other request
// to the same host and path over https with a 308.
//
// The package opens no listener and does not log: the wiring binds the
// listeners, and events (a certificate obtained, a reload that failed)
// reach the caller through [Options.OnEvent]. TLS off (plain HTTP behind a
// mesh or an ingress) needs no Manager.
package tlsconf
