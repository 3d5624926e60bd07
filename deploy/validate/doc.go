// Package validate checks the deployment files under deploy/: the plain
// Kubernetes manifests in deploy/kubernetes and the objects the Helm chart
// in deploy/helm/zimmer-sidecar renders. Objects are decoded strictly into
// the typed Kubernetes API objects (an unknown or duplicate field is an
// error), then checked against the rules a working zimmer-sidecar pod
// needs: a native sidecar, probes on the admin listener, a shutdown
// budget that fits the grace period, mounts for every path the sidecar
// writes or reads, a locked-down security context, a NetworkPolicy that
// lets only the public port through, and, with the egress on, an app that
// sends its OpenAI calls there and holds no key. The systemd unit in
// deploy/systemd is held to its own rules and to systemd-analyze verify,
// and the configurations the deployments give the sidecar to the
// sidecar's own check-config.
//
// It is a Go module of its own so that the Kubernetes and Helm libraries
// never become dependencies of the sidecar's binary. The package holds no
// program: its tests are the product, run by scripts/test.sh.
package validate
