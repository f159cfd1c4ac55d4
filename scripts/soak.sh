#!/usr/bin/env bash
# Soak run: the challenge's workload (escabelo-bench: 80% reads, values of
# the three size bands, 80% of requests on 20% of the keys, every value read
# checked) against a fresh release server in a temporary data directory,
# for --minutes (default 240). Every 10 s one row goes to soak.csv: the
# interval's ops/s and p50/p95/p99 per operation (from the bench), the
# server's RSS and open files, the data directory's size (du) against the
# live bytes the bench knows of, and the log size from `status`. At the end
# soak.png draws these curves over time.
#
# Exits non-zero if a request failed, a value read back was wrong (both
# reported by the bench), or RSS grows steadily: a least-squares line
# through the RSS of the second half of the run (the first half is warm-up:
# memtable, value cache and table files fill up) rises by more than
# --rss-growth-mib (default 32) or 5% of that half's mean RSS, whichever is
# larger, over that half.
#
# Usage: scripts/soak.sh [--minutes N] [--out DIR] [--concurrency N]
#                        [--key-count N] [--rss-growth-mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh

minutes=240
out=""
concurrency=10
key_count=10000
rss_growth_mib=32
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --key-count) key_count="$2"; shift 2 ;;
        --rss-growth-mib) rss_growth_mib="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "soak.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
for n in "$minutes" "$concurrency" "$key_count" "$rss_growth_mib"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "soak.sh: not a number: $n" >&2; exit 2; }
done
[ "$minutes" -ge 1 ] || { echo "soak.sh: --minutes must be at least 1" >&2; exit 2; }

out="${out:-target/soak/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
ensure_binaries
ensure_gnuplot || echo "soak.sh: gnuplot could not be installed; no plot" >&2

tmp="$(mktemp -d)"
bench_pid=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$bench_pid" ]; then kill "$bench_pid" 2>/dev/null || true; fi
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(free_port)"
data="$tmp/data"
echo "== soak: $minutes min, $concurrency connections, $key_count keys; server on port $port; results in $out"
start_server "$port" "$data" "$out/server.log"

target/release/escabelo-bench --addr "127.0.0.1:$port" --preload --key-count "$key_count" \
    --concurrency "$concurrency" --duration "${minutes}m" --report-every 10s \
    --csv "$out/bench.csv" --json --quiet >"$out/bench.json" 2>"$out/bench.err" &
bench_pid=$!

# One server sample per bench line, taken as the line appears.
csv="$out/soak.csv"
seen=1
header_done=0
bench_alive=1
while :; do
    if ! kill -0 "$bench_pid" 2>/dev/null; then bench_alive=0; fi
    lines=0
    [ -f "$out/bench.csv" ] && lines="$(wc -l <"$out/bench.csv")"
    if [ "$header_done" = 0 ] && [ "$lines" -ge 1 ]; then
        echo "$(head -n1 "$out/bench.csv"),rss_kib,open_files,du_bytes,disk_bytes,wal_bytes" >"$csv"
        header_done=1
    fi
    while [ "$seen" -lt "$lines" ]; do
        seen=$((seen + 1))
        row="$(sed -n "${seen}p" "$out/bench.csv")"
        st="$(status_line "$port" 2>/dev/null || true)"
        echo "$row,$(rss_kib "$server_pid"),$(open_files "$server_pid"),$(du_bytes "$data"),$(metric "$st" disk_bytes),$(metric "$st" wal_size)" >>"$csv"
        tail -n1 "$csv" | awk -F, '{ printf "  t=%6.0fs  %7.0f reads/s %7.0f writes/s  p99 %5.2f/%5.2f ms  rss %5.0f MiB  fds %s  du %6.1f MiB  live %6.1f MiB  errors %s\n",
            $2, $5, $6, $9/1000, $12/1000, $16/1024, $17, $18/1048576, $15/1048576, $13 }'
    done
    [ "$bench_alive" = 0 ] && break
    sleep 1
done
bench_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=""

fail=0
if [ "$bench_rc" != 0 ]; then
    echo "FAIL: escabelo-bench exited with $bench_rc (failed requests or wrong values); see $out/bench.err"
    sed -n '1,10p' "$out/bench.err"
    fail=1
fi
errors="$(awk -F, 'NR > 1 { e += $13 } END { print e + 0 }' "$csv")"
if [ "$errors" != 0 ]; then
    echo "FAIL: $errors failed requests in the intervals"
    fail=1
fi

# RSS rule: least squares over the second half of the run.
read -r slope_mib_h growth_mib mean_mib samples < <(awk -F, '
    NR > 1 && $3 == "run" { t[n] = $2; r[n] = $16 / 1024; n++ }
    END {
        half = t[n - 1] / 2; k = 0
        for (i = 0; i < n; i++) if (t[i] >= half) { x[k] = t[i] / 3600; y[k] = r[i]; k++ }
        if (k < 3) { print 0, 0, 0, k; exit }
        for (i = 0; i < k; i++) { sx += x[i]; sy += y[i]; sxx += x[i] * x[i]; sxy += x[i] * y[i] }
        d = k * sxx - sx * sx
        s = d > 0 ? (k * sxy - sx * sy) / d : 0
        printf "%.3f %.3f %.3f %d\n", s, s * (x[k - 1] - x[0]), sy / k, k
    }' "$csv")
limit="$(awk -v a="$rss_growth_mib" -v m="$mean_mib" 'BEGIN { l = m * 0.05; printf "%.3f", (a > l ? a : l) }')"
echo "RSS over the second half ($samples samples): mean $mean_mib MiB, trend $slope_mib_h MiB/h, fitted growth $growth_mib MiB (limit $limit MiB)"
if awk -v g="$growth_mib" -v l="$limit" 'BEGIN { exit !(g > l) }'; then
    echo "FAIL: RSS grows steadily"
    fail=1
fi

if command -v gnuplot >/dev/null 2>&1; then
    gnuplot <<GNUPLOT
set datafile separator ","
set terminal pngcairo size 1400,1800 font ",10"
set output "$out/soak.png"
set key outside right top
set grid
set xlabel "minutes"
set multiplot layout 4,1 title "Escabelo soak: $minutes min, $concurrency connections, $key_count keys"
set ylabel "ops/s"
plot "$csv" every ::1 using (\$2/60):5 with lines title "reads/s", \
     "" every ::1 using (\$2/60):6 with lines title "writes/s"
set ylabel "latency (ms)"
set logscale y
plot "$csv" every ::1 using (\$2/60):(\$7/1000) with lines title "read p50", \
     "" every ::1 using (\$2/60):(\$8/1000) with lines title "read p95", \
     "" every ::1 using (\$2/60):(\$9/1000) with lines title "read p99", \
     "" every ::1 using (\$2/60):(\$10/1000) with lines title "write p50", \
     "" every ::1 using (\$2/60):(\$11/1000) with lines title "write p95", \
     "" every ::1 using (\$2/60):(\$12/1000) with lines title "write p99"
unset logscale y
set ylabel "RSS (MiB)"
set y2label "open files"
set y2tics
plot "$csv" every ::1 using (\$2/60):(\$16/1024) with lines title "RSS", \
     "" every ::1 using (\$2/60):17 axes x1y2 with lines title "open files"
unset y2tics
unset y2label
set ylabel "MiB"
plot "$csv" every ::1 using (\$2/60):(\$18/1048576) with lines title "data dir (du)", \
     "" every ::1 using (\$2/60):(\$15/1048576) with lines title "live bytes", \
     "" every ::1 using (\$2/60):(\$20/1048576) with lines title "log (status wal size)"
unset multiplot
GNUPLOT
    echo "plot: $out/soak.png"
fi
echo "csv: $csv"
if [ "$fail" = 0 ]; then echo "PASS"; fi
exit "$fail"
