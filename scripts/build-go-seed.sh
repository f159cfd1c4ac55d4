#!/usr/bin/env bash
# Builds the original Go server, the seed this project replaces, so that
# scripts/compare.sh can run it beside Escabelo and Redis (its setup
# `go-seed`, with GO_SEED_BIN set to the binary this prints).
#
# Usage: scripts/build-go-seed.sh [SRC] [OUT]
#   SRC  a checkout of the seed's public repository; without it, the
#        repository is cloned from SEED_REPO
#        [https://github.com/decoesp/escabelo] into a temporary directory
#   OUT  where the binary goes [target/go-seed/escabelo-go]
#
# The source is copied before it is built, so SRC is never changed. The
# one change made to the copy: a `go` line in go.mod newer than the
# installed Go (the seed asks for 1.23.3; Debian's golang-go is older) is
# lowered to the installed version, which builds it (the seed has no
# dependencies outside the standard library). Debian's golang-go is
# installed if `go` is missing (as root, or with sudo).
#
# Nothing of the seed is kept in this repository: only this recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-}
OUT=${2:-target/go-seed/escabelo-go}
SEED_REPO=${SEED_REPO:-https://github.com/decoesp/escabelo}

log() { echo "build-go-seed: $*" >&2; }
die() { log "$*"; exit 1; }

sudo_cmd=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo_cmd=sudo
fi
if ! command -v go >/dev/null 2>&1; then
    log "installing Debian's golang-go"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q golang-go >/dev/null \
        || { $sudo_cmd apt-get update -q >/dev/null && \
             DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q golang-go >/dev/null; } \
        || die "could not install golang-go"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/go-seed.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "$SRC" ]; then
    [ -f "$SRC/go.mod" ] || die "$SRC has no go.mod: not a checkout of the seed"
    cp -r "$SRC/." "$work/src"
else
    log "cloning $SEED_REPO"
    git clone -q --depth 1 "$SEED_REPO" "$work/src" || die "could not clone $SEED_REPO"
fi
[ -d "$work/src/cmd/escabelo" ] || die "the source has no cmd/escabelo (the seed's server)"

# go1.19.8 -> 1.19
have=$(go env GOVERSION | sed -E 's/^go([0-9]+)\.([0-9]+).*/\1.\2/')
want=$(sed -nE 's/^go ([0-9]+\.[0-9]+).*/\1/p' "$work/src/go.mod" | head -n 1)
newer() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ] && [ "$1" != "$2" ]; }
if [ -n "$want" ] && newer "$want" "$have"; then
    log "go.mod asks for Go $want, Go $have is installed: building with the go line set to $have"
    sed -i -E "s/^go [0-9.]+$/go $have/" "$work/src/go.mod"
fi

mkdir -p "$(dirname "$OUT")"
out_abs="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
(cd "$work/src" && GOFLAGS=-mod=mod go build -o "$out_abs" ./cmd/escabelo)
log "built $out_abs (run: GO_SEED_BIN=$out_abs SETUPS=\"escabelo-os go-seed redis-everysec\" scripts/compare.sh)"
echo "$out_abs"
