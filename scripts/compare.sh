#!/usr/bin/env bash
# Runs the same workload against Escabelo (--durability os and sync) and
# Redis (AOF always, AOF everysec, no persistence), each started here on its
# own loopback port and temp directory and stopped afterwards, then prints
# one comparison table.
#
# Environment (defaults in brackets):
#   DURATION [30s]  CONCURRENCY [50]  READ_RATIO [0.8]  KEY_COUNT [10000]
#   HOT_KEY_RATIO [0.2]  PIPELINE [1]  SEED [42]  BASE_PORT [17380]
#   SETUPS ["escabelo-os escabelo-sync redis-always redis-everysec redis-none"]
#   ESCABELO_BIN [target/release/escabelo]  BENCH_BIN [target/release/escabelo-bench]
#   REDIS_BIN [redis-server]  KEEP_TMP [0] (1 keeps the temp directory)
#   SKIP_BUILD [0] (1 skips cargo build --release)
#
# Columns:
#   ops/s        total requests per second of the measured phase (bench JSON)
#   p95 read/write  95th percentile latency in ms (bench JSON, HDR histograms)
#   cpu us/req   server utime+stime from /proc/<pid>/stat, sampled after the
#                preload and after the measured phase, divided by the
#                requests of the measured phase
#   disk/live    du -sB1 of the data directory right after the run, divided
#                by the live data size the bench reports (latest value size
#                plus key size, summed over the keys)
# The preload (every key written once) is a separate bench invocation, so it
# is not in the requests, the latencies or the CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
CONCURRENCY=${CONCURRENCY:-50}
READ_RATIO=${READ_RATIO:-0.8}
KEY_COUNT=${KEY_COUNT:-10000}
HOT_KEY_RATIO=${HOT_KEY_RATIO:-0.2}
PIPELINE=${PIPELINE:-1}
SEED=${SEED:-42}
BASE_PORT=${BASE_PORT:-17380}
SETUPS=${SETUPS:-"escabelo-os escabelo-sync redis-always redis-everysec redis-none"}
ESCABELO_BIN=${ESCABELO_BIN:-target/release/escabelo}
BENCH_BIN=${BENCH_BIN:-target/release/escabelo-bench}
REDIS_BIN=${REDIS_BIN:-redis-server}
KEEP_TMP=${KEEP_TMP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

log() { echo "compare: $*" >&2; }

if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release binaries"
    cargo build --release
fi
[[ -x "$BENCH_BIN" ]] || { log "missing $BENCH_BIN"; exit 1; }

if [[ "$SETUPS" == *redis* ]] && ! command -v "$REDIS_BIN" >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]]; then
        log "installing Debian's redis-server"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    else
        log "redis-server is missing; run as root or: sudo apt-get install -y redis-server"
        exit 1
    fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/escabelo-compare.XXXXXX")
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
SERVER_PID=""
BENCH_PID=""

# Runs the bench in the background and waits for it, so that a signal
# reaches the trap at once; prints nothing, returns the bench's status.
run_bench() {
    local out=$1 status=0
    shift
    "$BENCH_BIN" "$@" >"$out" &
    BENCH_PID=$!
    wait "$BENCH_PID" || status=$?
    BENCH_PID=""
    return "$status"
}

stop_server() {
    local pid=$SERVER_PID
    SERVER_PID=""
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    if [[ -n "$BENCH_PID" ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_server
    if [[ "$KEEP_TMP" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ticks of CPU (utime + stime) used by a process so far.
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

record_failure() {
    python3 -c 'import json,sys; print(json.dumps({"setup": sys.argv[1], "failed": sys.argv[2]}))' \
        "$1" "$2" >>"$RESULTS"
}

port=$BASE_PORT
for setup in $SETUPS; do
    port=$((port + 1))
    dir="$WORK/$setup/data"
    logf="$WORK/$setup/server.log"
    mkdir -p "$dir"
    proto=text
    case "$setup" in
        escabelo-os|escabelo-sync)
            if [[ ! -x "$ESCABELO_BIN" ]]; then
                log "$setup: $ESCABELO_BIN not found, skipped"
                record_failure "$setup" "server binary missing"
                continue
            fi
            "$ESCABELO_BIN" --port "$port" --data-dir "$dir" --bind 127.0.0.1 --metrics-port 0 \
                --durability "${setup#escabelo-}" >"$logf" 2>&1 &
            ;;
        redis-always|redis-everysec)
            proto=resp
            "$REDIS_BIN" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
                --save "" --appendonly yes --appendfsync "${setup#redis-}" \
                --logfile "$logf" &
            ;;
        redis-none)
            proto=resp
            "$REDIS_BIN" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
                --save "" --appendonly no --logfile "$logf" &
            ;;
        *)
            log "unknown setup $setup"
            exit 1
            ;;
    esac
    SERVER_PID=$!
    if ! wait_for_port "$port" "$SERVER_PID"; then
        log "$setup: server did not start (log: $(tail -n 3 "$logf" 2>/dev/null | tr '\n' ' '))"
        record_failure "$setup" "server did not start"
        stop_server
        continue
    fi

    common=(--addr "127.0.0.1:$port" --protocol "$proto" --concurrency "$CONCURRENCY"
        --read-ratio "$READ_RATIO" --key-count "$KEY_COUNT" --hot-key-ratio "$HOT_KEY_RATIO"
        --pipeline "$PIPELINE" --seed "$SEED" --json --quiet)
    log "$setup: preloading $KEY_COUNT keys on port $port"
    rc=0
    run_bench "$WORK/$setup/preload.json" "${common[@]}" --preload --duration 0s || rc=$?
    if [[ $rc != 0 ]]; then
        log "$setup: preload failed (exit $rc)"
    fi
    cpu0=$(cpu_ticks "$SERVER_PID")
    log "$setup: running $DURATION"
    run_bench "$WORK/$setup/run.json" "${common[@]}" --assume-preloaded --duration "$DURATION" \
        || rc=$?
    cpu1=$(cpu_ticks "$SERVER_PID")
    disk=$(du -sB1 "$dir" | cut -f1)
    stop_server
    python3 - "$setup" "$WORK/$setup/run.json" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" \
        "$disk" "$rc" >>"$RESULTS" <<'EOF'
import json, sys
setup, path, ticks, hz, disk, rc = sys.argv[1:]
try:
    with open(path) as f:
        r = json.load(f)
except (OSError, ValueError) as e:
    print(json.dumps({"setup": setup, "failed": f"no bench result: {e}"}))
    sys.exit(0)
n = r["total"]["count"]
live = r["live_bytes"]
print(json.dumps({
    "setup": setup,
    "ops": r["total"]["ops_per_sec"],
    "p95_read_ms": r["read"]["latency_us"]["p95"] / 1000,
    "p95_write_ms": r["write"]["latency_us"]["p95"] / 1000,
    "cpu_us_per_req": int(ticks) / int(hz) * 1e6 / n if n else None,
    "disk_per_live": int(disk) / live if live else None,
    "disk_bytes": int(disk),
    "live_bytes": live,
    "errors": r["errors"] + (1 if rc != "0" and r["errors"] == 0 else 0),
}))
EOF
done

python3 - "$RESULTS" "$DURATION" "$CONCURRENCY" "$READ_RATIO" "$KEY_COUNT" "$PIPELINE" <<'EOF'
import json, sys
path, duration, conc, rr, keys, pipe = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
print(f"\nworkload: {duration}, {conc} connections, pipeline {pipe}, read ratio {rr}, "
      f"{keys} keys, preloaded\n")
def f(v, fmt):
    return "n/a" if v is None else format(v, fmt)
hdr = f"{'setup':<16} {'ops/s':>10} {'p95 read ms':>12} {'p95 write ms':>13} {'cpu us/req':>11} {'disk/live':>10} {'errors':>7}"
print(hdr)
print("-" * len(hdr))
ok = {}
for r in rows:
    if "failed" in r:
        print(f"{r['setup']:<16} failed: {r['failed']}")
        continue
    ok[r["setup"]] = r
    print(f"{r['setup']:<16} {f(r['ops'], '10.0f')} {f(r['p95_read_ms'], '12.3f')} "
          f"{f(r['p95_write_ms'], '13.3f')} {f(r['cpu_us_per_req'], '11.1f')} "
          f"{f(r['disk_per_live'], '10.3f')} {r['errors']:>7}")
esc = [s for s in ok if s.startswith("escabelo")]
red = [s for s in ok if s.startswith("redis")]
if esc and red:
    print("\nratios, Escabelo / Redis (ops/s: higher is better; the rest: lower is better)\n")
    hdr = f"{'escabelo vs redis':<32} {'ops/s':>8} {'p95 read':>9} {'p95 write':>10} {'cpu/req':>8} {'disk/live':>10}"
    print(hdr)
    print("-" * len(hdr))
    def ratio(a, b, floor=1e-9):
        # floor: a Redis without persistence has ~0 bytes on disk; no ratio.
        if a is None or b is None or b < floor:
            return "n/a"
        return f"{a / b:.2f}"
    for e in esc:
        for r in red:
            a, b = ok[e], ok[r]
            print(f"{e + ' / ' + r:<32} {ratio(a['ops'], b['ops']):>8} "
                  f"{ratio(a['p95_read_ms'], b['p95_read_ms']):>9} "
                  f"{ratio(a['p95_write_ms'], b['p95_write_ms']):>10} "
                  f"{ratio(a['cpu_us_per_req'], b['cpu_us_per_req']):>8} "
                  f"{ratio(a['disk_per_live'], b['disk_per_live'], 0.01):>10}")
failed = any("failed" in r or r.get("errors") for r in rows)
sys.exit(1 if failed else 0)
EOF
