#!/usr/bin/env bash
# Runs the whole test suite. Installs and starts what the tests need when
# it is missing, so it works on a fresh machine and in CI (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }

# Tools the end-to-end tests run: Python 3 and Node.js for the example
# apps. They come with the machine; install from Debian if missing.
missing=()
need_cmd python3 || missing+=(python3)
need_cmd node || missing+=(nodejs)
need_cmd npm || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    log "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} (install them, or run as root to let this script do it)" >&2
    exit 1
  fi
fi

# Headless Chromium for the status page test (internal/status), from
# Debian. Without it that test skips, and fails when CI is set.
if ! need_cmd chromium; then
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    log "installing chromium"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "missing: chromium (the status page test skips, or fails in CI)" >&2
  fi
fi

# PostgreSQL for the shared-ledger tests: this machine kind starts it before
# each session; start it here if it is installed but stopped.
if need_cmd pg_isready && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if [ "$(id -u)" = 0 ] && need_cmd pg_ctlcluster; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
fi

# The Node example app's npm packages (the openai client, pinned by its
# package-lock.json): the end-to-end tests call shop-bot's assistant route,
# which uses it to reach OpenAI through the sidecar's egress. Without them
# that route answers 503.
log "npm ci (examples/node-app)"
(cd examples/node-app && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

log "go vet"
go vet ./...

log "go test"
# -count=1: never report a cached pass for tests that start real processes.
go test -race -count=1 -timeout 30m ./...

log "deploy"
# The Kubernetes manifests and the Helm chart, checked by a module of its
# own (deploy/validate: Kubernetes and Helm stay out of the binary, and
# ./... above does not enter it); the first run downloads its modules.
# Then the Dockerfile's lint (a pinned linter from npm).
(cd deploy/validate && go vet ./... && go test -count=1 ./...)
deploy/lint-dockerfile.sh

log "fuzz"
# Every fuzz target for a few seconds: 33 targets at 3 s take about 3.5
# minutes on a 2-core machine, and FUZZ_TOTAL keeps the step near 5
# minutes as targets are added. FUZZTIME=0 skips the step; raise FUZZTIME
# and FUZZ_TOTAL to fuzz longer (scripts/fuzz.sh prints its budget).
if [ "${FUZZTIME:-3s}" != 0 ]; then
  FUZZTIME=${FUZZTIME:-3s} FUZZ_TOTAL=${FUZZ_TOTAL:-280} scripts/fuzz.sh
fi
