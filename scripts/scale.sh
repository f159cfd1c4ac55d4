#!/usr/bin/env bash
# Scale run: loads --entries keys (default 1,000,000; values of the
# challenge's three size bands, about 7 GB for a million) into a fresh
# release server in a temporary data directory, then reports:
#   - the load rate (entries/s and MB/s, and per 10 s in load.csv),
#   - the server's RSS and the data directory's size against the live bytes,
#   - the time to restart after kill -9 (until `status` answers),
#   - a full read-back: every key read once and compared byte for byte
#     with what was written (escabelo-bench --verify-all).
# The summary goes to stdout and to scale.txt in --out. Exits non-zero if
# a write failed or any key read back is missing or different.
#
# Usage: scripts/scale.sh [--entries N] [--out DIR] [--concurrency N]
#                         [--pipeline N]
# Needs about 1.1 times 7 KB per entry of free disk in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh

entries=1000000
out=""
concurrency=16
pipeline=8
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --entries) entries="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --pipeline) pipeline="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "scale.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
for n in "$entries" "$concurrency" "$pipeline"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: not a positive number: $n" >&2; exit 2; }
done

out="${out:-target/scale/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
ensure_binaries

tmp="$(mktemp -d)"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(free_port)"
data="$tmp/data"
summary="$out/scale.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
now_ms() { date +%s%3N; }
json_field() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | head -n1; }

say "== scale: $entries entries, $concurrency connections x pipeline $pipeline; server on port $port; results in $out"
start_server "$port" "$data" "$out/server.log"

fail=0
bench=(target/release/escabelo-bench --addr "127.0.0.1:$port" --key-count "$entries"
    --concurrency "$concurrency" --pipeline "$pipeline" --quiet --json)
"${bench[@]}" --preload --duration 0s --report-every 10s --csv "$out/load.csv" \
    >"$out/load.json" 2>"$out/load.err" || { say "FAIL: the load reported errors (see $out/load.err)"; fail=1; }
secs="$(json_field "$out/load.json" preload_secs)"
writes="$(json_field "$out/load.json" preload_writes)"
live="$(json_field "$out/load.json" live_bytes)"
say "load: $writes entries in ${secs}s: $(awk -v n="$writes" -v s="$secs" -v b="$live" \
    'BEGIN { printf "%.0f entries/s, %.1f MB/s", n / s, b / s / 1e6 }'), live data $(mib "$live")"

st="$(status_line "$port")"
say "after the load: RSS $(mib "$(($(rss_kib "$server_pid") * 1024))"), open files $(open_files "$server_pid")"
du_now="$(du_bytes "$data")"
say "disk: du $(mib "$du_now"), status disk_bytes $(mib "$(metric "$st" disk_bytes)"), log $(mib "$(metric "$st" wal_size)"), tables $(metric "$st" sst_count), du/live $(awk -v d="$du_now" -v l="$live" 'BEGIN { printf "%.3f", d / l }')"

# Let the idle flush and blob collection run, then measure again.
sleep 10
st="$(status_line "$port")"
du_now="$(du_bytes "$data")"
say "after 10 s idle: du $(mib "$du_now"), du/live $(awk -v d="$du_now" -v l="$live" 'BEGIN { printf "%.3f", d / l }'), log $(mib "$(metric "$st" wal_size)")"

kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
t0="$(now_ms)"
start_server "$port" "$data" "$out/server.log"
t1="$(now_ms)"
say "restart after kill -9: $((t1 - t0)) ms until status answers; RSS $(mib "$(($(rss_kib "$server_pid") * 1024))")"

"${bench[@]}" --verify-all >"$out/verify.json" 2>"$out/verify.err" || fail=1
keys="$(json_field "$out/verify.json" keys)"
wrong="$(json_field "$out/verify.json" wrong)"
vsecs="$(json_field "$out/verify.json" secs)"
say "read-back: ${keys:-0} of $entries keys in ${vsecs:-?}s, ${wrong:-?} missing or wrong"
if [ "${wrong:-1}" != 0 ] || [ "${keys:-0}" != "$entries" ]; then
    say "FAIL: read-back (see $out/verify.err)"
    sed -n '1,10p' "$out/verify.err"
    fail=1
fi
say "RSS after the read-back: $(mib "$(($(rss_kib "$server_pid") * 1024))")"
if [ "$fail" = 0 ]; then say "PASS"; fi
exit "$fail"
