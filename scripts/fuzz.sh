#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each.
#
#   FUZZTIME   time per target, a go test -fuzztime value (default 10s)
#   FUZZ_PKGS  package patterns to search (default ./...)
#   FUZZ_TOTAL seconds the whole run should take at most (default none):
#              when FUZZTIME would exceed it, each target gets less time,
#              never under 1s
#
# Targets are found by grepping the _test.go files of the module's packages
# for "func FuzzX(", since -fuzz takes one package and a regexp that must
# match exactly one target. A target fails the run when it finds a failing
# input (written to the package's testdata/fuzz/FuzzX/, printed below) or
# when its package does not build.
#
# Go 1.26's fuzz coordinator sometimes ends a clean run with a bare
# "context deadline exceeded" at the -fuzztime boundary
# (https://go.dev/issue/75804, fixed in Go 1.27). Such a run wrote no
# input; the script then replays the target's corpus without fuzzing and
# counts the target as passed, with a note, when that replay passes.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-10s}
read -r -a patterns <<<"${FUZZ_PKGS:-./...}"

log() { printf '==> %s\n' "$*"; }

# 1. Discover the targets: "dir target" lines, sorted. go list keeps out
# nested modules and tolerates packages that do not build (those fail
# below, when they are run).
targets=()
while IFS= read -r dir; do
  [ -d "$dir" ] || continue
  while IFS= read -r name; do
    targets+=("$dir $name")
  done < <(grep -hoE '^func Fuzz[A-Za-z0-9_]*\(' "$dir"/*_test.go 2>/dev/null |
    sed -e 's/^func //' -e 's/($//' | sort -u)
done < <(go list -e -f '{{.Dir}}' "${patterns[@]}")

if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found in ${patterns[*]}" >&2
  exit 1
fi

# The budget: fuzzing time plus about 4 s a target to build the
# instrumented test binary (cached after a package's first target) and to
# replay the seed corpus.
n=${#targets[@]}
case $fuzztime in
  *[0-9]s) per_target=${fuzztime%s} ;;
  *[0-9]m) per_target=$((${fuzztime%m} * 60)) ;;
  *) per_target= ;;
esac
if [[ $per_target =~ ^[0-9]+$ ]]; then
  total=${FUZZ_TOTAL:-}
  if [[ $total =~ ^[0-9]+$ ]] && ((n * (per_target + 4) > total)); then
    per_target=$((total / n - 4))
    ((per_target >= 1)) || per_target=1
    fuzztime=${per_target}s
    log "FUZZ_TOTAL=${total}s: cutting each target's time to $fuzztime"
  fi
  log "fuzzing $n targets for $fuzztime each: budget about $((n * (per_target + 4)))s"
else
  log "fuzzing $n targets for $fuzztime each"
fi

# 2. Run each target alone.
module=$(go list -m)
failed=()
flaked=()
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in "${targets[@]}"; do
  dir=${t% *}
  name=${t#* }
  rel=.${dir#"$PWD"}
  corpus="$dir/testdata/fuzz/$name"
  before=$(ls "$corpus" 2>/dev/null | sort || true)

  log "$rel $name"
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$rel" >"$out" 2>&1; then
    tail -n 1 "$out"
    continue
  fi

  # A failing input: name the file, show the failure.
  after=$(ls "$corpus" 2>/dev/null | sort || true)
  new=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed '/^$/d')
  if [ -n "$new" ]; then
    cat "$out"
    while IFS= read -r f; do
      echo "FAIL $module/${rel#./} $name: failing input written to $corpus/$f"
      echo "     reproduce: go test -run '^${name}\$/${f}\$' $rel"
    done <<<"$new"
    failed+=("$rel $name")
    continue
  fi

  # The coordinator's deadline race: nothing written, nothing else wrong.
  if grep -q '^    context deadline exceeded$' "$out" &&
    ! grep -qE 'panic:|Failing input|--- FAIL: [^ ]+/' "$out"; then
    if go test -count=1 -run "^${name}\$" "$rel" >/dev/null 2>&1; then
      echo "note: $name ended with Go's fuzz deadline race (go.dev/issue/75804);" \
        "its corpus replays clean"
      flaked+=("$rel $name")
      continue
    fi
  fi

  cat "$out"
  echo "FAIL $module/${rel#./} $name (no failing input was written; see above)"
  failed+=("$rel $name")
done

# 3. Summary.
log "$((n - ${#failed[@]})) of $n targets passed" \
  "(${#flaked[@]} of them after the deadline race) in ${SECONDS}s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
