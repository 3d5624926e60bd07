#!/usr/bin/env bash
# Lints the root Dockerfile with dockerfile-utils (the linter of the
# Dockerfile language server), pinned, installed from npm into a cache
# directory on first use. No Docker engine is needed.
#
#   DOCKERFILE_UTILS_CACHE  where the linter is installed
#                           (default ~/.cache/zimmer-sidecar)
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.16.3
cache=${DOCKERFILE_UTILS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zimmer-sidecar}
prefix="$cache/dockerfile-utils-$version"
bin="$prefix/node_modules/.bin/dockerfile-utils"

if [ ! -x "$bin" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: cannot lint the Dockerfile" >&2
    # In CI a missing linter is a failure, elsewhere a note.
    [ "${CI:-}" = true ] && exit 1
    exit 0
  fi
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" \
    "dockerfile-utils@$version" >/dev/null
fi

"$bin" lint Dockerfile
echo "Dockerfile: ok (dockerfile-utils $version)"
