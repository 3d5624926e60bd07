#!/usr/bin/env bash
# Runs the example Python app and zimmer-sidecar in front of it, on the
# embedded ledger, until Ctrl-C. Used by `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/zimmer-sidecar
[ -x "$bin" ] || go build -o "$bin" ./cmd/zimmer-sidecar

# A service token for the demo, unless the caller brought one.
if [ -z "${ZIMMER_SERVICE_TOKEN:-}" ]; then
  ZIMMER_SERVICE_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export ZIMMER_SERVICE_TOKEN
  echo "demo service token: $ZIMMER_SERVICE_TOKEN"
fi

mkdir -p data
python3 examples/python-app/app.py --port 8000 > data/python-app.log 2>&1 &
app=$!
trap 'kill "$app" 2>/dev/null || true; wait "$app" 2>/dev/null || true' EXIT INT TERM

# Wait for the app's readiness line (at most 10 s).
for _ in $(seq 100); do
  grep -q '^listening on' data/python-app.log && break
  kill -0 "$app" 2>/dev/null || { cat data/python-app.log; exit 1; }
  sleep 0.1
done

cat <<MSG
example app on http://127.0.0.1:8000 (log: data/python-app.log)
sidecar on http://127.0.0.1:8080, admin on http://127.0.0.1:9090; try:
  curl -s http://127.0.0.1:8080/health
  curl -s -H "X-Zimmer-Service-Token: $ZIMMER_SERVICE_TOKEN" \\
       -d '{"user_automation_id": 1, "user_id": 1, "demo_tokens": null}' \\
       http://127.0.0.1:8080/provision
  $bin ledger show 1 -admin http://127.0.0.1:9090
  $bin ledger credit 1 100 -admin http://127.0.0.1:9090
  ZIMMER_SERVICE_TOKEN=$ZIMMER_SERVICE_TOKEN $bin check http://127.0.0.1:8080
the status page: http://127.0.0.1:9090/status, metrics: http://127.0.0.1:9090/metrics
MSG
"$bin" run -config examples/python-app/zimmer-sidecar.toml
