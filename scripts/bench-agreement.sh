#!/usr/bin/env bash
# Checks that escabelo-bench measures what an independent load generator
# (redis-benchmark) measures on the same server: both run the same workload
# (CONCURRENCY connections, one request in flight each, KEY_COUNT keys
# chosen uniformly, VALUE_SIZE-byte values, RESP), writes only then reads
# only, alternating the two generators ROUNDS times on each server. Prints
# every run, the medians, and escabelo-bench / redis-benchmark per phase,
# plus each generator's own CPU time per request.
#
# Environment (defaults in brackets):
#   SERVERS ["escabelo-os redis-everysec"]  ROUNDS [3]  CONCURRENCY [50]
#   KEY_COUNT [20000]  VALUE_SIZE [1024]  DURATION [4s] (escabelo-bench)
#   REQUESTS [200000] (redis-benchmark -n, per test)  BASE_PORT [17480]
#   BENCH_BIN [target/release/escabelo-bench]  ESCABELO_BIN [target/release/escabelo]
#   REDIS_BIN [redis-server]  REDIS_BENCHMARK [redis-benchmark]
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-"escabelo-os redis-everysec"}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-50}
KEY_COUNT=${KEY_COUNT:-20000}
VALUE_SIZE=${VALUE_SIZE:-1024}
DURATION=${DURATION:-4s}
REQUESTS=${REQUESTS:-200000}
BASE_PORT=${BASE_PORT:-17480}
BENCH_BIN=${BENCH_BIN:-target/release/escabelo-bench}
ESCABELO_BIN=${ESCABELO_BIN:-target/release/escabelo}
REDIS_BIN=${REDIS_BIN:-redis-server}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}

log() { echo "agreement: $*" >&2; }
for b in "$BENCH_BIN" "$ESCABELO_BIN"; do
    [[ -x "$b" ]] || { log "missing $b (cargo build --release -p escabelo -p escabelo-bench)"; exit 1; }
done
for b in "$REDIS_BIN" "$REDIS_BENCHMARK"; do
    command -v "$b" >/dev/null 2>&1 || { log "missing $b (apt-get install redis-server redis-tools)"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/escabelo-agreement.XXXXXX")
RUNS="$WORK/runs.tsv"
SERVER_PID=""
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
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_port() {
    for _ in $(seq 1 200); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# Runs a command under GNU time-like accounting: prints "user+sys seconds"
# of the command (and its children) on fd 3.
timed() {
    local t0 t1
    t0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
    "$@"
    t1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
    echo "$(( t1 - t0 ))" >&3
}

hz=$(getconf CLK_TCK)
printf 'server\tround\tgenerator\tphase\tops\tclient_cpu_us_per_req\n' >"$RUNS"
port=$BASE_PORT
for server in $SERVERS; do
    port=$((port + 1))
    dir="$WORK/$server"
    mkdir -p "$dir"
    case "$server" in
        escabelo-os|escabelo-sync)
            "$ESCABELO_BIN" --port "$port" --bind 127.0.0.1 --data-dir "$dir" \
                --durability "${server#escabelo-}" >"$WORK/$server.log" 2>&1 &
            ;;
        redis-always|redis-everysec)
            "$REDIS_BIN" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
                --save "" --appendonly yes --appendfsync "${server#redis-}" \
                --logfile "$WORK/$server.log" &
            ;;
        *) log "unknown server $server"; exit 1 ;;
    esac
    SERVER_PID=$!
    wait_for_port "$port" "$SERVER_PID" || { log "$server did not start"; exit 1; }
    eb=("$BENCH_BIN" --addr "127.0.0.1:$port" --protocol resp --concurrency "$CONCURRENCY"
        --key-count "$KEY_COUNT" --hot-key-ratio 1 --value-size "$VALUE_SIZE" --json --quiet)
    "${eb[@]}" --preload --duration 0s >/dev/null
    for round in $(seq 1 "$ROUNDS"); do
        order="redis-benchmark escabelo-bench"
        if (( round % 2 == 0 )); then
            order="escabelo-bench redis-benchmark"
        fi
        for gen in $order; do
            if [[ $gen == redis-benchmark ]]; then
                exec 3>"$WORK/cpu"
                timed "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$port" -c "$CONCURRENCY" \
                    -n "$REQUESTS" -r "$KEY_COUNT" -d "$VALUE_SIZE" -t set,get --csv \
                    >"$WORK/rb.csv"
                exec 3>&-
                python3 - "$WORK/rb.csv" "$(cat "$WORK/cpu")" "$hz" "$REQUESTS" \
                    "$server" "$round" >>"$RUNS" <<'EOF'
import csv, sys
path, ticks, hz, n, server, rnd = sys.argv[1:]
cpu = int(ticks) / int(hz) * 1e6 / (2 * int(n))
for row in csv.reader(open(path)):
    if row and row[0] in ("SET", "GET"):
        phase = "write" if row[0] == "SET" else "read"
        print(f"{server}\t{rnd}\tredis-benchmark\t{phase}\t{float(row[1]):.0f}\t{cpu:.2f}")
EOF
            else
                for phase in write read; do
                    ratio=0
                    [[ $phase == read ]] && ratio=1
                    exec 3>"$WORK/cpu"
                    timed "${eb[@]}" --assume-preloaded --read-ratio "$ratio" \
                        --duration "$DURATION" >"$WORK/eb.json"
                    exec 3>&-
                    python3 - "$WORK/eb.json" "$(cat "$WORK/cpu")" "$hz" "$server" "$round" \
                        "$phase" >>"$RUNS" <<'EOF'
import json, sys
path, ticks, hz, server, rnd, phase = sys.argv[1:]
r = json.load(open(path))
n = r["total"]["count"]
if r["errors"]:
    sys.exit(f"escabelo-bench reported {r['errors']} errors: {r['error_samples']}")
cpu = int(ticks) / int(hz) * 1e6 / n if n else 0
print(f"{server}\t{rnd}\tescabelo-bench\t{phase}\t{r['total']['ops_per_sec']:.0f}\t{cpu:.2f}")
EOF
                done
            fi
            tail -n 2 "$RUNS" | sed 's/^/  /' >&2
        done
    done
    stop_server
done

python3 - "$RUNS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("\nper run (ops/s):")
for r in rows:
    print(f"  {r['server']:<15} round {r['round']} {r['generator']:<16} {r['phase']:<5} "
          f"{r['ops']:>8}  client cpu {r['client_cpu_us_per_req']} us/req")
print("\nmedians:")
print(f"  {'server':<15} {'phase':<5} {'redis-benchmark':>16} {'escabelo-bench':>15} {'ratio':>6}"
      f" {'rb cpu us/req':>14} {'eb cpu us/req':>14}")
for server in dict.fromkeys(r["server"] for r in rows):
    for phase in ("write", "read"):
        def med(gen, col):
            v = [float(r[col]) for r in rows
                 if r["server"] == server and r["phase"] == phase and r["generator"] == gen]
            return statistics.median(v) if v else float("nan")
        rb, eb = med("redis-benchmark", "ops"), med("escabelo-bench", "ops")
        print(f"  {server:<15} {phase:<5} {rb:>16.0f} {eb:>15.0f} {eb / rb:>6.2f}"
              f" {med('redis-benchmark', 'client_cpu_us_per_req'):>14.2f}"
              f" {med('escabelo-bench', 'client_cpu_us_per_req'):>14.2f}")
EOF
