// Package config reads the sidecar's one TOML file into a typed, validated
// [Config].
//
// Loading is strict and pure. Unknown keys and wrong types are errors, and
// every problem found in one run comes back together in a [*ValidationError]
// whose entries name the key path (route[2].meter.user) and the line in the
// file, or the environment variable that set the value. Defaults live in one
// place, [Default]. Loading reads the configuration file, the files named by
// "file:" secret references and the TLS files it checks (tls.cert_file,
// tls.key_file, tls.ca_root), and nothing else: it opens no socket, writes
// no file, keeps no global state and never reads the process environment
// itself; the caller passes the environment in.
//
// Every key can be overridden from the environment: ZIMMER_SIDECAR_ followed
// by the key path in upper case with levels joined by "__", array-of-table
// entries addressed by their index (ZIMMER_SIDECAR_ROUTE__0__PROTECT=true),
// lists written comma-separated. ZIMMER_SIDECAR_CONFIG is reserved for the
// command line (the file's path) and is not an override. config.example.toml
// at the repository root documents every key with its default.
//
// The package does not build components: the wiring in internal/sidecar turns
// a Config into each package's own options.
package config
