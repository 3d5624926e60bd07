// Package ratelimit limits how fast each client may send requests, with
// one token bucket per client address and bucket name.
//
// A client is the connection's peer address (httpx.ClientAddr): forwarding
// headers such as X-Forwarded-For are never read, since the client writes
// them. IPv6 peers are grouped by their /64, the block one subscriber
// usually holds. Behind a layer-7 proxy (an ingress, a mesh) every request
// has the proxy's address, so a per-client limit there is one limit for
// everybody: enable it only where the listener sees the real clients.
//
// Each bucket holds up to Burst tokens and refills continuously at Rate
// tokens a second; a request takes one token or is refused with 429
// {"detail":"Too many requests"} and a Retry-After header. Buckets live in
// a bounded LRU: past MaxClients buckets the least recently used one is
// forgotten, which gives that client a full bucket when it returns. An
// attacker with more addresses than MaxClients can therefore escape the
// limit; memory stays bounded either way.
//
// Options.Classify sorts requests into named buckets or exempts them, so
// that, for example, a health check has a budget of its own that other
// calls from the same address cannot spend.
//
// The package never logs; Options.OnLimit reports each refusal.
package ratelimit
