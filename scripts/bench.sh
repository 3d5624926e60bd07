#!/usr/bin/env bash
# Load benchmark of the sidecar on this machine, all traffic on loopback.
#
# Builds the sidecar, the stand-in app (bench/upstream) and the load tool
# (bench/load); starts the app and a sidecar in front of it; then runs,
# interleaved REPS times, DURATION each:
#   direct       GET to the app itself (the baseline)
#   passthrough  GET through the sidecar on an unrouted path
#   protected    GET through the sidecar on a route that checks the token
#   metered      GET on a protected route that charges 1 unit (durable)
#   consume      durable POST /usage/consume, a unique Idempotency-Key each
#   goproxy      GET through a plain, tuned httputil.ReverseProxy (a peer)
#   nginx        GET through nginx, when nginx is installed (a peer)
# and prints a markdown table of medians with the ratio to direct and the
# CPU time per request of the sidecar and the app (from /proc/PID/stat).
# It also measures the disk's synchronous-write rate (dd oflag=dsync), the
# bound a one-fsync-per-write ledger could not pass.
#
# Environment: DURATION (10s), REPS (3), CONNS (64), WRK=1 to repeat the
# GET rows with wrk when installed, NGINX=0 to skip nginx, ACCESS_LOG
# (true), OUT (results directory; default a new one under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
WRK=${WRK:-0}
NGINX=${NGINX:-1}
ACCESS_LOG=${ACCESS_LOG:-true}
OUT=${OUT:-$(mktemp -d /tmp/zimmer-bench.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/zimmer-bench-work.XXXXXX)

log() { printf '==> %s\n' "$*" >&2; }

# Every process this script starts is recorded here and stopped on exit.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN: wait up to 10 s for PATTERN to appear in FILE.
wait_for() {
  for _ in $(seq 100); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

# cpu_ticks PID...: user+system clock ticks of the given processes.
cpu_ticks() {
  local sum=0 pid t
  for pid in "$@"; do
    t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    sum=$((sum + t))
  done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)

# free_port: a loopback TCP port nobody listens on now.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    if ! ss -ltn "sport = :$p" | grep -q LISTEN; then echo "$p"; return; fi
  done
}

# ---- 1. Machine facts ------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "go: $(go version)"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} | tee "$OUT/machine.txt" >&2

# ---- 2. Build ---------------------------------------------------------------
log "building"
go build -o "$WORK/zimmer-sidecar" ./cmd/zimmer-sidecar
go build -o "$WORK/upstream" ./bench/upstream
go build -o "$WORK/load" ./bench/load

# ---- 3. The disk's synchronous write rate ------------------------------------
# 1,000 writes of 4 KiB, each flushed (O_DSYNC), on the ledger's file
# system. Bounded by count and by timeout.
fsync_rate() {
  local secs
  secs=$(timeout 120 dd if=/dev/zero of="$WORK/dsync.bin" bs=4k count=1000 \
    oflag=dsync 2>&1 | awk '/copied/ {for (i=1;i<=NF;i++) if ($i ~ /^s,?$/) print $(i-1)}')
  rm -f "$WORK/dsync.bin"
  awk -v s="$secs" 'BEGIN { if (s > 0) printf "%.0f", 1000 / s; else print "?" }'
}
log "disk sync rate"
FSYNC1=$(fsync_rate)

# ---- 4. App and sidecar ------------------------------------------------------
"$WORK/upstream" -addr 127.0.0.1:0 -addr-file "$WORK/up.addr" &
UP_PID=$!
PIDS+=("$UP_PID")
wait_for "$WORK/up.addr" :
APP="http://$(cat "$WORK/up.addr")"

TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_SERVICE_TOKEN=$TOKEN
cat >"$WORK/sidecar.toml" <<EOF
[automation]
version = "bench"

[listen]
public = "127.0.0.1:0"
admin = ""

[log]
access = $ACCESS_LOG

[auth]
tokens = ["env:BENCH_SERVICE_TOKEN"]

[app]
url = "$APP"

[ledger]
path = "$WORK/data/ledger.db"

[[route]]
path = "/protected/*"
protect = true

[[route]]
path = "/metered/*"
protect = true
meter = { units = 1, usage_type = "bench", user = "header:X-Tenant" }
EOF
# The access log goes to a file, as a container runtime would take it.
"$WORK/zimmer-sidecar" run -config "$WORK/sidecar.toml" 2>"$WORK/sidecar.log" &
SC_PID=$!
PIDS+=("$SC_PID")
wait_for "$WORK/sidecar.log" '"msg":"listening"'
SC="http://$(grep -o '"public":"[^"]*"' "$WORK/sidecar.log" | head -1 | cut -d'"' -f4)"
log "app $APP, sidecar $SC"

# The plain Go reverse proxy peer.
"$WORK/upstream" -addr 127.0.0.1:0 -addr-file "$WORK/plain.addr" -proxy "$APP" &
PLAIN_PID=$!
PIDS+=("$PLAIN_PID")
wait_for "$WORK/plain.addr" :
PLAIN="http://$(cat "$WORK/plain.addr")"

# Accounts 1..8 with a demo grant no run can exhaust.
"$WORK/load" -url "$SC/provision" -method POST -c 1 -n 8 -d 10s \
  -header "X-Zimmer-Service-Token: $TOKEN" \
  -body '{"user_automation_id":{seq},"user_id":{seq},"demo_tokens":1152921504606846976}' \
  >/dev/null

# ---- 5. nginx as a peer (optional) --------------------------------------------
NGINX_PIDS=()
if [ "$NGINX" = 1 ] && command -v nginx >/dev/null 2>&1; then
  NG_PORT=$(free_port)
  mkdir -p "$WORK/nginx/logs"
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log $WORK/nginx/logs/access.log;
  upstream app { server $(cat "$WORK/up.addr"); keepalive 64; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
  NG_PID=$!
  PIDS+=("$NG_PID")
  sleep 0.5
  NGINX_PIDS=("$NG_PID" $(pgrep -P "$NG_PID" || true))
  NG="http://127.0.0.1:$NG_PORT"
  log "nginx $NG (pids ${NGINX_PIDS[*]})"
fi

# ---- 6. The runs ----------------------------------------------------------------
# run_one NAME TOOL URL [load flags...]: one timed run, appended to
# results.tsv as: name tool rep rps p50 p99 non2xx errors proxy_us app_us
RESULTS="$OUT/results.tsv"
printf 'name\ttool\trep\trps\tp50_ms\tp99_ms\tnon2xx\terrors\tproxy_cpu_us\tapp_cpu_us\n' \
  >"$RESULTS"
REP=0

run_one() {
  local name=$1 tool=$2 url=$3
  shift 3
  local proxy_pids=()
  case $name in
    direct) ;;
    nginx) proxy_pids=("${NGINX_PIDS[@]}") ;;
    goproxy) proxy_pids=("$PLAIN_PID") ;;
    *) proxy_pids=("$SC_PID") ;;
  esac
  local p0 a0 p1 a1 line rps p50 p99 non2xx errors n
  p0=$(cpu_ticks "${proxy_pids[@]}")
  a0=$(cpu_ticks "$UP_PID")
  if [ "$tool" = wrk ]; then
    line=$(wrk_run "$url" "$@")
  else
    line=$("$WORK/load" -url "$url" -c "$CONNS" -d "$DURATION" -json "$@" || true)
  fi
  p1=$(cpu_ticks "${proxy_pids[@]}")
  a1=$(cpu_ticks "$UP_PID")
  rps=$(json_num "$line" requests_per_s)
  p50=$(json_num "$line" p50_ms)
  p99=$(json_num "$line" p99_ms)
  non2xx=$(json_num "$line" non_2xx)
  errors=$(json_num "$line" errors)
  n=$(json_num "$line" requests)
  local pcpu="-"
  if [ ${#proxy_pids[@]} -gt 0 ]; then pcpu=$(per_req $((p1 - p0)) "$n"); fi
  printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$tool" "$REP" "$rps" \
    "$p50" "$p99" "$non2xx" "$errors" "$pcpu" "$(per_req $((a1 - a0)) "$n")" >>"$RESULTS"
  log "$(tail -1 "$RESULTS")"
}

# per_req TICKS N: CPU microseconds per request.
per_req() {
  awk -v t="$1" -v n="$2" -v hz="$HZ" \
    'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "0" }'
}

# json_num JSON KEY: a number field of the load tool's JSON report.
json_num() {
  grep -o "\"$2\":[-0-9.e+]*" <<<"$1" | head -1 | cut -d: -f2
}

# wrk_run URL [-header 'K: V']...: one wrk run, reported in the load
# tool's JSON shape (wrk counts non-2xx itself).
wrk_run() {
  local url=$1
  shift
  local hdrs=()
  while [ $# -gt 0 ]; do
    case $1 in
      -header) hdrs+=(-H "$2"); shift 2 ;;
      *) shift ;;
    esac
  done
  wrk -t 2 -c "$CONNS" -d "$DURATION" --latency "${hdrs[@]}" "$url" 2>&1 | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                     if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { non = $NF } /Socket errors/ { err = 1 }
    END { printf "{\"requests\":%d,\"errors\":%d,\"non_2xx\":%d,", n, err, non;
          printf "\"requests_per_s\":%s,\"p50_ms\":%s,\"p99_ms\":%s}\n", rps, p50, p99 }'
}

AUTH=(-header "X-Zimmer-Service-Token: $TOKEN")
CONSUME_BODY='{"user_automation_id":{seq%8},"units":1,"usage_type":"bench"}'

log "warm-up"
"$WORK/load" -url "$SC/plain/x" -c "$CONNS" -d 2s >/dev/null

for REP in $(seq "$REPS"); do
  log "repetition $REP of $REPS"
  run_one direct load "$APP/plain/x"
  run_one passthrough load "$SC/plain/x"
  run_one protected load "$SC/protected/x" "${AUTH[@]}"
  run_one metered load "$SC/metered/x" "${AUTH[@]}" -header "X-Tenant: 1"
  run_one consume load "$SC/usage/consume" -method POST -idempotency \
    "${AUTH[@]}" -body "$CONSUME_BODY"
  run_one goproxy load "$PLAIN/plain/x"
  if [ -n "${NG:-}" ]; then run_one nginx load "$NG/plain/x"; fi
  if [ "$WRK" = 1 ] && command -v wrk >/dev/null 2>&1; then
    run_one direct wrk "$APP/plain/x"
    run_one passthrough wrk "$SC/plain/x"
    run_one protected wrk "$SC/protected/x" "${AUTH[@]}"
    run_one goproxy wrk "$PLAIN/plain/x"
    if [ -n "${NG:-}" ]; then run_one nginx wrk "$NG/plain/x"; fi
  fi
done

FSYNC2=$(fsync_rate)
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
echo "sync writes/s (dd 4 KiB oflag=dsync): $FSYNC1 before, $FSYNC2 after" |
  tee -a "$OUT/machine.txt" >&2

# ---- 7. The table of medians ----------------------------------------------------------
awk -F'\t' -v reps="$REPS" -v conns="$CONNS" -v dur="$DURATION" '
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) {
      t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    if (n == 0) return 0
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  NR == 1 { next }
  {
    k = $1 SUBSEP $2
    if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
    rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6
    bad[k] += $7 + $8; pc[k] = pc[k] " " $9; ac[k] = ac[k] " " $10
  }
  END {
    printf "%d connections, %s per run, %s interleaved repetitions, medians\n\n",
      conns, dur, reps
    print "| target | load tool | req/s | ratio to direct | p50 ms | p99 ms |" \
      " proxy CPU us/req | app CPU us/req | non-2xx + errors |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= nk; i++) {
      k = order[i]; split(k, f, SUBSEP)
      d = median(rps["direct" SUBSEP f[2]])
      r = median(rps[k])
      pcm = (pc[k] ~ /-/) ? "-" : sprintf("%.1f", median(pc[k]))
      printf "| %s | %s | %.0f | %.2f | %.2f | %.2f | %s | %.1f | %d |\n",
        f[1], f[2], r, (d > 0 ? r / d : 0), median(p50[k]), median(p99[k]),
        pcm, median(ac[k]), bad[k]
    }
  }' "$RESULTS" | tee "$OUT/table.md"
echo
cat "$OUT/machine.txt"
log "raw results in $RESULTS"
