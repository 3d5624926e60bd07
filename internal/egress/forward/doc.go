// Package forward is the egress forward-proxy mode: the sidecar serves as
// the app's HTTPS_PROXY for apps whose OpenAI URL is hard-coded.
//
// A [CA] is the sidecar's local certificate authority. [LoadOrCreateCA]
// reuses a certificate and key found on disk (created by an earlier start
// or given by the operator) or creates an ECDSA P-256 CA and writes it, so
// that the app can trust it through SSL_CERT_FILE, REQUESTS_CA_BUNDLE or
// NODE_EXTRA_CA_CERTS. [CA.LeafFor] mints a short-lived certificate for
// one host on demand and caches it.
//
// A [Proxy] is the http.Handler of the proxy listener. It decides every
// CONNECT by its exact host and port, and nothing else:
//
//   - an intercepted host (Options.Intercept): the proxy answers 200,
//     terminates TLS with a leaf for that host and serves the decrypted
//     HTTP/1.1 requests, several per connection, with the host's handler;
//   - a tunnelled host (Options.Tunnel): the proxy dials exactly that
//     address and splices bytes both ways until both sides end or the
//     tunnel is idle for too long;
//   - any other host: 403 with a JSON body; nothing is dialled.
//
// Requests that are not CONNECT are refused: plain-HTTP proxy requests
// (GET http://host/...) get a 403, even for an intercepted host, so the
// handlers only ever see requests that arrived over TLS; other requests
// get a 400. The proxy is never an open proxy: the only addresses it ever
// dials are the configured tunnel entries, and intercepted requests go to
// the configured handlers, which decide for themselves where to forward.
//
// The package opens no listener of its own unless [Proxy.Serve] is used,
// logs only hosts, addresses and errors (never headers or bodies), and
// stops with [Proxy.Shutdown] or [Proxy.Close].
package forward
