#!/usr/bin/env bash
# Load benchmark of the sidecar on this machine, all traffic on loopback.
#
# Builds the sidecar, the stand-in app (bench/upstream), the load tool
# (bench/load) and the probe (bench/probe); starts the app, a sidecar in
# front of it and the peers (a plain Go reverse proxy, nginx and Caddy);
# then, with "load" in STEPS, runs, interleaved REPS times, DURATION each:
#   direct       GET to the app itself (the baseline)
#   passthrough  GET through the sidecar on an unrouted path
#   protected    GET through the sidecar on a route that checks the token
#   metered      GET on a protected route that charges 1 unit (durable)
#   consume      durable POST /usage/consume, a unique Idempotency-Key each
#   goproxy      GET through a plain, tuned httputil.ReverseProxy (a peer)
#   nginx        GET through nginx (a peer)
#   caddy        GET through Caddy's reverse_proxy (a peer)
# and prints a markdown table of medians with the ratio to direct and the
# CPU time per request of the proxy and the app (from /proc/PID/stat).
# It also measures the disk's synchronous-write rate (dd oflag=dsync), the
# bound a one-fsync-per-write ledger could not pass.
#
# With "footprint" in STEPS it then measures, on a fresh sidecar: the
# time from start to the first 200 from /health and the resident memory
# just after (bench/probe ready); the resident memory with IDLE_CONNS idle
# keep-alive connections (bench/probe idle; the peers too); the latency
# of /health while the protected route is loaded with CONNS connections;
# and the time to the first byte of a streamed answer (server-sent
# events) directly and through each proxy (bench/probe ttfb).
#
# nginx and Caddy come from Debian's packages (nginx-light, caddy); when
# one is missing and the script runs as root it installs it with apt-get
# (INSTALL=0 to never install), with service starts refused by
# policy-rc.d, and runs the binary itself on loopback. The access log of
# every proxy follows ACCESS_LOG.
#
# Environment: DURATION (10s, whole seconds), REPS (3), CONNS (64),
# STEPS ("load footprint"), WRK=1 to repeat the GET rows with wrk,
# NGINX=0 / CADDY=0 to skip a peer, INSTALL (1), ACCESS_LOG (true),
# IDLE_CONNS (10000), STARTS (5), TTFB_N (200), OUT (results directory;
# default a new one under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
STEPS=${STEPS:-load footprint}
WRK=${WRK:-0}
NGINX=${NGINX:-1}
CADDY=${CADDY:-1}
INSTALL=${INSTALL:-1}
ACCESS_LOG=${ACCESS_LOG:-true}
IDLE_CONNS=${IDLE_CONNS:-10000}
STARTS=${STARTS:-5}
TTFB_N=${TTFB_N:-200}
if ! [[ $DURATION =~ ^[0-9]+s$ ]] || [ "${DURATION%s}" -lt 4 ]; then
  echo "DURATION must be whole seconds, at least 4s, such as 10s" >&2
  exit 2
fi
SECS=${DURATION%s}
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

# free_port: a loopback TCP port nobody listens on now, below the
# ephemeral range that the idle connections draw from.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if ! ss -ltn "sport = :$p" | grep -q LISTEN; then echo "$p"; return; fi
  done
}

# rss_kib PID...: resident memory of the given processes, summed.
rss_kib() {
  local sum=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# wait_http URL: wait up to 10 s for URL to answer at all.
wait_http() {
  for _ in $(seq 200); do
    if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2
  return 1
}

# has_step NAME: whether STEPS names the step.
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

# ensure_cmd CMD PACKAGE: true when CMD is installed, installing PACKAGE
# from Debian first when allowed (INSTALL=1, root, apt-get present).
# policy-rc.d refuses the package's service start for the install: the
# script runs the binaries itself, on loopback only.
ensure_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$INSTALL" != 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "$1 not installed; skipping it (apt-get install $2)"
    return 1
  fi
  log "installing $2"
  local made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2; } ||
    true
  if [ "$made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  command -v "$1" >/dev/null 2>&1
}

# Peers, installed first so that the machine facts name their versions.
HAVE_NGINX=0 HAVE_CADDY=0 HAVE_WRK=0
if [ "$NGINX" = 1 ] && ensure_cmd nginx nginx-light; then HAVE_NGINX=1; fi
if [ "$CADDY" = 1 ] && ensure_cmd caddy caddy; then HAVE_CADDY=1; fi
if [ "$WRK" = 1 ] && ensure_cmd wrk wrk; then HAVE_WRK=1; fi

# Room for IDLE_CONNS connections in this script's processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- 1. Machine facts ------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "memory: $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "go: $(go version)"
  if [ "$HAVE_NGINX" = 1 ]; then echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)"; fi
  if [ "$HAVE_CADDY" = 1 ]; then echo "caddy: $(caddy version | cut -d' ' -f1)"; fi
  if [ "$HAVE_WRK" = 1 ]; then echo "wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"; fi
  echo "open files limit: $(ulimit -n)"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} | tee "$OUT/machine.txt" >&2

# ---- 2. Build ---------------------------------------------------------------
log "building"
go build -o "$WORK/zimmer-sidecar" ./cmd/zimmer-sidecar
go build -o "$WORK/upstream" ./bench/upstream
go build -o "$WORK/load" ./bench/load
go build -o "$WORK/probe" ./bench/probe

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

# sidecar_config PUBLIC LEDGER MAX_CONNECTIONS: the benchmark sidecar's
# configuration.
sidecar_config() {
  cat <<EOF
[automation]
version = "bench"

[listen]
public = "$1"
admin = ""
max_connections = $3

[log]
access = $ACCESS_LOG

[auth]
tokens = ["env:BENCH_SERVICE_TOKEN"]

[app]
url = "$APP"

[ledger]
path = "$2"

[[route]]
path = "/protected/*"
protect = true

[[route]]
path = "/metered/*"
protect = true
meter = { units = 1, usage_type = "bench", user = "header:X-Tenant" }
EOF
}
sidecar_config 127.0.0.1:0 "$WORK/data/ledger.db" 4096 >"$WORK/sidecar.toml"
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

# ---- 5. nginx and Caddy as peers ---------------------------------------------
# Both keep up to 256 idle connections to the app, like the sidecar and
# the Go peer, and write an access log to a file when ACCESS_LOG is true.
UP_HOSTPORT=$(cat "$WORK/up.addr")
NGINX_PIDS=()
if [ "$HAVE_NGINX" = 1 ]; then
  NG_PORT=$(free_port)
  mkdir -p "$WORK/nginx/logs"
  if [ "$ACCESS_LOG" = true ]; then
    NG_ACCESS="access_log $WORK/nginx/logs/access.log;"
  else
    NG_ACCESS="access_log off;"
  fi
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections $((IDLE_CONNS + 1024)); }
http {
  $NG_ACCESS
  upstream app { server $UP_HOSTPORT; keepalive 256; }
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
  NG="http://127.0.0.1:$NG_PORT"
  wait_http "$NG/"
  NGINX_PIDS=("$NG_PID" $(pgrep -P "$NG_PID" || true))
  log "nginx $NG (pids ${NGINX_PIDS[*]})"
fi

CD_PID=
if [ "$HAVE_CADDY" = 1 ]; then
  CD_PORT=$(free_port)
  mkdir -p "$WORK/caddy"
  if [ "$ACCESS_LOG" = true ]; then
    CD_ACCESS="log {
		output file $WORK/caddy/access.log
	}"
  else
    CD_ACCESS=""
  fi
  # No admin endpoint, no automatic HTTPS, its state under $WORK, bound
  # to loopback only.
  cat >"$WORK/caddy/Caddyfile" <<EOF
{
	admin off
	auto_https off
	storage file_system $WORK/caddy/data
	log {
		output file $WORK/caddy/caddy.log
		level WARN
	}
}
http://127.0.0.1:$CD_PORT {
	bind 127.0.0.1
	reverse_proxy $UP_HOSTPORT {
		transport http {
			keepalive_idle_conns 256
			keepalive_idle_conns_per_host 256
		}
	}
	$CD_ACCESS
}
EOF
  HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy/data" XDG_CONFIG_HOME="$WORK/caddy/config" \
    caddy run --config "$WORK/caddy/Caddyfile" --adapter caddyfile \
    >"$WORK/caddy/run.log" 2>&1 &
  CD_PID=$!
  PIDS+=("$CD_PID")
  CD="http://127.0.0.1:$CD_PORT"
  wait_http "$CD/"
  log "caddy $CD (pid $CD_PID)"
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
    caddy) proxy_pids=("$CD_PID") ;;
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

if has_step load; then
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
  if [ -n "${CD:-}" ]; then run_one caddy load "$CD/plain/x"; fi
  if [ "$HAVE_WRK" = 1 ]; then
    run_one direct wrk "$APP/plain/x"
    run_one passthrough wrk "$SC/plain/x"
    run_one protected wrk "$SC/protected/x" "${AUTH[@]}"
    run_one metered wrk "$SC/metered/x" "${AUTH[@]}" -header "X-Tenant: 1"
    run_one goproxy wrk "$PLAIN/plain/x"
    if [ -n "${NG:-}" ]; then run_one nginx wrk "$NG/plain/x"; fi
    if [ -n "${CD:-}" ]; then run_one caddy wrk "$CD/plain/x"; fi
  fi
done

FSYNC2=$(fsync_rate)
echo "loadavg after the load runs: $(cut -d' ' -f1-3 /proc/loadavg)" |
  tee -a "$OUT/machine.txt" >&2
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
    # The throughput targets of issue 5: the sidecar (protected: token
    # checked; metered: token checked and 1 unit charged durably) against
    # Caddy and nginx, same load tool.
    print ""
    print "| sidecar row | load tool | / caddy req/s | / nginx req/s |"
    print "| --- | --- | --- | --- |"
    for (i = 1; i <= nk; i++) {
      k = order[i]; split(k, f, SUBSEP)
      if (f[1] != "protected" && f[1] != "metered") continue
      r = median(rps[k]); c = median(rps["caddy" SUBSEP f[2]])
      g = median(rps["nginx" SUBSEP f[2]])
      printf "| %s | %s | %s | %s |\n", f[1], f[2],
        (c > 0 ? sprintf("%.2f", r / c) : "-"), (g > 0 ? sprintf("%.2f", r / g) : "-")
    }
  }' "$RESULTS" | tee "$OUT/table.md"
fi

# ---- 8. Footprint and latency ------------------------------------------------------------
if has_step footprint; then
  FOOT="$OUT/footprint.md"
  : >"$FOOT"
  FP_PORT=$(free_port)
  FP="http://127.0.0.1:$FP_PORT"
  sidecar_config "127.0.0.1:$FP_PORT" "$WORK/fp/ledger.db" $((IDLE_CONNS + 500)) \
    >"$WORK/footprint.toml"

  # 8a. Start-up: STARTS fresh starts, each timed from exec to the first
  # 200 from /health (after the sidecar's first probe of the app), and
  # the resident memory one second later, idle.
  log "start-up time and idle memory ($STARTS starts)"
  READY=$("$WORK/probe" ready -url "$FP/health" -n "$STARTS" -log "$WORK/fp-ready.log" \
    -- "$WORK/zimmer-sidecar" run -config "$WORK/footprint.toml")
  echo "$READY" >"$OUT/ready.json"

  # 8b. Memory with IDLE_CONNS idle keep-alive connections: a fresh
  # sidecar, then each peer as the load runs left it. Each connection made
  # one request and stays open and idle.
  "$WORK/zimmer-sidecar" run -config "$WORK/footprint.toml" 2>"$WORK/fp.log" &
  FP_PID=$!
  PIDS+=("$FP_PID")
  wait_http "$FP/health"
  sleep 1
  idle_rss() { # idle_rss NAME URL PID...
    local name=$1 url=$2 before after line
    shift 2
    before=$(rss_kib "$@")
    "$WORK/probe" idle -url "$url" -n "$IDLE_CONNS" -hold 300s >"$WORK/idle.out" &
    local ipid=$!
    PIDS+=("$ipid")
    for _ in $(seq 1200); do
      if grep -q open "$WORK/idle.out" 2>/dev/null || ! kill -0 "$ipid" 2>/dev/null; then
        break
      fi
      sleep 0.1
    done
    sleep 2
    after=$(rss_kib "$@")
    line=$(head -1 "$WORK/idle.out")
    kill "$ipid" 2>/dev/null || true
    wait "$ipid" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\n' "$name" "$before" "$after" "$line" >>"$WORK/idle.tsv"
    log "idle $name: $before KiB -> $after KiB ($line)"
    sleep 2 # let the closed connections leave the server
  }
  log "memory with $IDLE_CONNS idle connections"
  : >"$WORK/idle.tsv"
  idle_rss sidecar "$FP/plain/x" "$FP_PID"
  idle_rss app "$APP/plain/x" "$UP_PID"
  idle_rss goproxy "$PLAIN/plain/x" "$PLAIN_PID"
  if [ -n "${NG:-}" ]; then idle_rss nginx "$NG/plain/x" "${NGINX_PIDS[@]}"; fi
  if [ -n "${CD:-}" ]; then idle_rss caddy "$CD/plain/x" "$CD_PID"; fi

  # 8c. /health while the protected route is loaded with CONNS
  # connections: one client asks /health back to back, starting a second
  # after the load and stopping a second before it ends. First with no
  # load; and, as the machine's own share, the same client asking the app
  # directly (GET /plain/x) under the same load on the sidecar: what any
  # process waits for a core on a saturated box.
  log "/health latency, idle and under load"
  : >"$WORK/health.tsv"
  probe_under_load() { # probe_under_load STATE REP URL
    "$WORK/load" -url "$SC/protected/x" -c "$CONNS" -d "$DURATION" -json "${AUTH[@]}" \
      >"$WORK/health-load.json" &
    local lpid=$! h
    PIDS+=("$lpid")
    sleep 1
    h=$("$WORK/load" -url "$3" -c 1 -d "$((SECS - 2))s" -json)
    wait "$lpid" || true
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$h" "$(cat "$WORK/health-load.json")" \
      >>"$WORK/health.tsv"
    log "$1 $2: $h"
  }
  H=$("$WORK/load" -url "$SC/health" -c 1 -d 5s -json)
  printf 'sidecar /health, idle\t-\t%s\n' "$H" >>"$WORK/health.tsv"
  for rep in $(seq "$REPS"); do
    probe_under_load "sidecar /health, loaded" "$rep" "$SC/health"
    probe_under_load "app GET, sidecar loaded" "$rep" "$APP/plain/x"
  done

  # 8d. Time to the first byte of a streamed answer: TTFB_N requests of
  # 3 server-sent events 5 ms apart, one after another, per target.
  log "time to first streamed byte"
  : >"$WORK/ttfb.tsv"
  STREAM="/stream/x?events=3&gap=5ms"
  ttfb() { # ttfb NAME BASE
    printf '%s\t%s\n' "$1" "$("$WORK/probe" ttfb -url "$2$STREAM" -n "$TTFB_N")" \
      >>"$WORK/ttfb.tsv"
  }
  ttfb direct "$APP"
  ttfb sidecar "$SC"
  ttfb goproxy "$PLAIN"
  if [ -n "${NG:-}" ]; then ttfb nginx "$NG"; fi
  if [ -n "${CD:-}" ]; then ttfb caddy "$CD"; fi

  # The footprint tables.
  {
    echo "Start-up to the first 200 from /health, $STARTS starts:"
    echo "$READY" | awk '{
      match($0, /"p50_ms":[0-9.]+/); p50 = substr($0, RSTART + 9, RLENGTH - 9)
      match($0, /"min_ms":[0-9.]+/); mn = substr($0, RSTART + 9, RLENGTH - 9)
      match($0, /"max_ms":[0-9.]+/); mx = substr($0, RSTART + 9, RLENGTH - 9)
      match($0, /"rss_kib":\[[0-9,]*\]/); r = substr($0, RSTART + 11, RLENGTH - 12)
      gsub(/,/, ", ", r)
      printf "median %s ms (min %s, max %s); idle RSS one second after: %s KiB\n",
        p50, mn, mx, r }'
    echo
    echo "Resident memory with $IDLE_CONNS idle keep-alive connections:"
    echo
    echo "| target | RSS before MiB | RSS with the connections MiB | KiB per connection | opened |"
    echo "| --- | --- | --- | --- | --- |"
    awk -F'\t' '{
      match($4, /"open":[0-9]+/); open = substr($4, RSTART + 7, RLENGTH - 7) + 0
      printf "| %s | %.1f | %.1f | %.1f | %d |\n", $1, $2 / 1024, $3 / 1024,
        (open > 0 ? ($3 - $2) / open : 0), open }' "$WORK/idle.tsv"
    echo
    echo "/health latency (one client, back to back), idle and while $CONNS" \
      "connections load the protected route; and the app's own latency under that load:"
    echo
    echo "| probe | rep | probe req/s | p50 ms | p99 ms | max ms | protected req/s |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    awk -F'\t' 'function num(s, k,   v) { if (match(s, "\"" k "\":[-0-9.e+]+")) {
        v = substr(s, RSTART + length(k) + 3, RLENGTH - length(k) - 3); return v + 0 }
        return -1 }
      { printf "| %s | %s | %.0f | %.2f | %.2f | %.2f | %s |\n", $1, $2,
          num($3, "requests_per_s"), num($3, "p50_ms"), num($3, "p99_ms"),
          num($3, "max_ms"), ($4 == "" ? "-" : sprintf("%.0f", num($4, "requests_per_s"))) }' \
      "$WORK/health.tsv"
    echo
    echo "Streamed answer (3 events 5 ms apart), $TTFB_N requests one after another:"
    echo
    echo "| target | first byte p50 ms | first byte p99 ms | whole p50 ms | whole p99 ms |"
    echo "| --- | --- | --- | --- | --- |"
    awk -F'\t' '{
      s = $2; sub(/.*"first_byte":/, "", s); f = s; sub(/}.*/, "", f)
      w = s; sub(/.*"whole":/, "", w); sub(/}.*/, "", w)
      match(f, /"p50_ms":[0-9.]+/); f50 = substr(f, RSTART + 9, RLENGTH - 9)
      match(f, /"p99_ms":[0-9.]+/); f99 = substr(f, RSTART + 9, RLENGTH - 9)
      match(w, /"p50_ms":[0-9.]+/); w50 = substr(w, RSTART + 9, RLENGTH - 9)
      match(w, /"p99_ms":[0-9.]+/); w99 = substr(w, RSTART + 9, RLENGTH - 9)
      printf "| %s | %s | %s | %s | %s |\n", $1, f50, f99, w50, w99 }' "$WORK/ttfb.tsv"
  } | tee "$FOOT"
  cp "$WORK/idle.tsv" "$WORK/health.tsv" "$WORK/ttfb.tsv" "$OUT/"
fi

echo
cat "$OUT/machine.txt"
log "results in $OUT"
