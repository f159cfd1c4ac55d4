#!/usr/bin/env bash
# Compares Escabelo (--durability os and sync) with Redis 7 (AOF everysec and
# always) phase by phase, with the same load generator (escabelo-bench) on
# the same machine. Each setup is started here on its own loopback port and
# temp directory, preloaded, run through the phases, and stopped; the setups
# take turns (A B C D, A B C D, ...) for ROUNDS rounds so that no setup runs
# twice in a row, and every figure is the median over the rounds.
#
# Environment (defaults in brackets):
#   DURATION [8s] per phase      CONCURRENCY [50]      KEY_COUNT [20000]
#   ROUNDS [3]                   HOT_KEY_RATIO [0.2]   PIPELINE [1]   SEED [42]
#   PHASES ["read80 read70 write read single-write single-read"]
#          read80/read70: 80%/70% reads; write: writes only; read: reads only;
#          single-write/single-read: one connection, one request at a time.
#          The preload (every key written once, 50 connections) always runs
#          first and is reported as phase "preload" (its rate is the load rate).
#   SETUPS ["escabelo-os escabelo-sync redis-everysec redis-always"]
#          (redis-none, Redis without persistence, may be added; so may
#          escabelo-os-b and escabelo-sync-b: a second Escabelo build or
#          setting, ESCABELO_B_BIN started with ESCABELO_B_FLAGS, to compare
#          two of them in the same alternating run; and go-seed: the
#          original Go server, GO_SEED_BIN, as scripts/build-go-seed.sh
#          builds it, spoken to in the text protocol; it has no bind flag
#          and listens on every interface, and its live data is not
#          measured, since that takes the Redis protocol)
#   VALUE_SIZE [0] (0: the challenge's size bands; N: every value N bytes)
#   ESCABELO_PROTOCOL [text] protocol spoken to Escabelo (text or resp;
#          Redis is always spoken to in RESP)
#   SYSCALLS [auto]  how syscalls are counted: perf (perf stat tracepoint
#          raw_syscalls:sys_enter on the server, every syscall), io
#          (/proc/PID/io syscr+syscw; see below), off; auto = perf if it works
#   OUT_DIR [bench-results]  where compare-<time>.jsonl and .md are written
#   BASE_PORT [17380]  ESCABELO_BIN [target/release/escabelo]
#   BENCH_BIN [target/release/escabelo-bench]  REDIS_BIN [redis-server]
#   ESCABELO_B_BIN [ESCABELO_BIN]  ESCABELO_B_FLAGS [""] (for the -b setups)
#   GO_SEED_BIN [target/go-seed/escabelo-go] (for go-seed)
#   KEEP_TMP [0] (1 keeps the temp directory)  SKIP_BUILD [0] (1: no cargo build)
#
# Figures, per phase and setup (server figures are sampled just before and
# just after the phase's bench process, so they cover only that phase):
#   ops/s             requests per second (bench JSON)
#   p50/p95/p99       read and write latency, ms (bench, HDR histograms)
#   cpu us/req        server utime+stime (/proc/PID/stat) / requests
#   syscalls/req      server syscalls / requests (see SYSCALLS). Note that
#                     /proc/PID/io counts read/write/readv/writev only: a
#                     server using recv/send on its sockets (Rust's std and
#                     tokio do) shows only its file I/O there, Redis (read and
#                     write on sockets) shows everything; only perf compares.
#   ctxsw/req         voluntary + involuntary context switches of all server
#                     threads (/proc/PID/task/*/status) / requests
#   disk/live         after the last phase: du of the data directory / live
#                     data, the sum of STRLEN of every key plus the key
#                     lengths, asked of the server itself; then again at rest,
#                     REST_SECS [12] after the last request (Escabelo tidies
#                     up 5 s after the last request: docs/performance.md)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8s}
CONCURRENCY=${CONCURRENCY:-50}
KEY_COUNT=${KEY_COUNT:-20000}
ROUNDS=${ROUNDS:-3}
HOT_KEY_RATIO=${HOT_KEY_RATIO:-0.2}
PIPELINE=${PIPELINE:-1}
SEED=${SEED:-42}
REST_SECS=${REST_SECS:-12}
PHASES=${PHASES:-"read80 read70 write read single-write single-read"}
SETUPS=${SETUPS:-"escabelo-os escabelo-sync redis-everysec redis-always"}
VALUE_SIZE=${VALUE_SIZE:-0}
SYSCALLS=${SYSCALLS:-auto}
ESCABELO_PROTOCOL=${ESCABELO_PROTOCOL:-text}
OUT_DIR=${OUT_DIR:-bench-results}
BASE_PORT=${BASE_PORT:-17380}
ESCABELO_BIN=${ESCABELO_BIN:-target/release/escabelo}
BENCH_BIN=${BENCH_BIN:-target/release/escabelo-bench}
REDIS_BIN=${REDIS_BIN:-redis-server}
ESCABELO_B_BIN=${ESCABELO_B_BIN:-$ESCABELO_BIN}
ESCABELO_B_FLAGS=${ESCABELO_B_FLAGS:-}
GO_SEED_BIN=${GO_SEED_BIN:-target/go-seed/escabelo-go}
KEEP_TMP=${KEEP_TMP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

log() { echo "compare: $*" >&2; }
die() { log "$*"; exit 1; }

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
for p in $PHASES; do
    case "$p" in
        read80|read70|write|read|single-write|single-read) ;;
        *) die "unknown phase '$p' (read80 read70 write read single-write single-read)" ;;
    esac
done
for s in $SETUPS; do
    case "$s" in
        escabelo-os|escabelo-sync|escabelo-os-b|escabelo-sync-b) ;;
        redis-everysec|redis-always|redis-none) ;;
        go-seed) [[ -x "$GO_SEED_BIN" ]] \
            || die "missing $GO_SEED_BIN (the Go server: scripts/build-go-seed.sh builds it)" ;;
        *) die "unknown setup '$s'" ;;
    esac
done

if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building release binaries"
    cargo build --release -p escabelo -p escabelo-bench
fi
[[ -x "$BENCH_BIN" ]] || die "missing $BENCH_BIN"
if [[ "$SETUPS" == *escabelo* && ! -x "$ESCABELO_BIN" ]]; then
    die "missing $ESCABELO_BIN"
fi
if [[ "$SETUPS" == *escabelo-*-b* && ! -x "$ESCABELO_B_BIN" ]]; then
    die "missing $ESCABELO_B_BIN"
fi
if [[ "$SETUPS" == *redis* ]] && ! command -v "$REDIS_BIN" >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]]; then
        log "installing Debian's redis-server"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    else
        die "redis-server is missing; run as root or: sudo apt-get install -y redis-server"
    fi
fi

if [[ "$SYSCALLS" == auto ]]; then
    SYSCALLS=io
    if command -v perf >/dev/null 2>&1 \
        && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null -- true >/dev/null 2>&1; then
        SYSCALLS=perf
    fi
fi
case "$SYSCALLS" in perf|io|off) ;; *) die "SYSCALLS must be perf, io, off or auto" ;; esac

mkdir -p "$OUT_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
JSONL="$OUT_DIR/compare-$STAMP.jsonl"
MD="$OUT_DIR/compare-$STAMP.md"
: >"$JSONL"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/escabelo-compare.XXXXXX")
SERVER_PID=""
BENCH_PID=""
PERF_PID=""

stop_perf() {
    local pid=$PERF_PID
    PERF_PID=""
    [[ -n "$pid" ]] || return 0
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
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
    if kill -0 "$pid" 2>/dev/null; then
        log "server $pid ignored SIGTERM for 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if [[ -n "$BENCH_PID" ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_perf
    stop_server
    if [[ "$KEEP_TMP" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU ticks (utime + stime) the process has used so far.
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

# syscr + syscw of /proc/PID/io.
io_syscalls() {
    awk '$1 == "syscr:" || $1 == "syscw:" { n += $2 } END { print n + 0 }' "/proc/$1/io"
}

# Context switches (voluntary + involuntary) of every current thread.
ctx_switches() {
    cat "/proc/$1"/task/*/status 2>/dev/null \
        | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
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

# Starts setup $1 on port $2 with data in $3, logging to $4; sets SERVER_PID.
start_server() {
    local setup=$1 port=$2 dir=$3 logf=$4
    case "$setup" in
        escabelo-*)
            local bin=$ESCABELO_BIN flags="" mode=${setup#escabelo-}
            if [[ "$mode" == *-b ]]; then
                bin=$ESCABELO_B_BIN flags=$ESCABELO_B_FLAGS mode=${mode%-b}
            fi
            # shellcheck disable=SC2086 # $flags is a list of flags
            "$bin" --port "$port" --data-dir "$dir" --bind 127.0.0.1 --metrics-port 0 \
                --durability "$mode" $flags >"$logf" 2>&1 &
            ;;
        redis-always|redis-everysec)
            "$REDIS_BIN" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
                --save "" --appendonly yes --appendfsync "${setup#redis-}" \
                --logfile "$logf" &
            ;;
        redis-none)
            "$REDIS_BIN" --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize no \
                --save "" --appendonly no --logfile "$logf" &
            ;;
        go-seed)
            "$GO_SEED_BIN" -port "$port" -data-dir "$dir" >"$logf" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    wait_for_port "$port" "$SERVER_PID"
}

# Live data of keys bench:000000.. on the server: sum of STRLEN + key lengths.
live_bytes() {
    python3 - "$1" "$KEY_COUNT" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=30)
total, buf = 0, b""
for start in range(0, n, 1000):
    keys = [f"bench:{i:06d}".encode() for i in range(start, min(n, start + 1000))]
    s.sendall(b"".join(b"*2\r\n$6\r\nSTRLEN\r\n$%d\r\n%s\r\n" % (len(k), k) for k in keys))
    for k in keys:
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("server closed the connection")
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        if not line.startswith(b":"):
            sys.exit(f"unexpected STRLEN reply {line[:80]!r}")
        if int(line[1:]) > 0:
            total += int(line[1:]) + len(k)
print(total)
EOF
}

# Runs one phase of the bench against the current server and appends its
# JSONL record. Arguments: setup round phase port protocol bench-args...
run_phase() {
    local setup=$1 round=$2 phase=$3 port=$4 proto=$5 rc=0
    shift 5
    local out="$WORK/$setup-$round-$phase.json" perf_out="$WORK/perf-$setup-$round-$phase"
    local cpu0 cpu1 io0 io1 cs0 cs1 sys=""
    if [[ "$SYSCALLS" == perf ]]; then
        perf stat -e raw_syscalls:sys_enter -x, -o "$perf_out" -p "$SERVER_PID" \
            >/dev/null 2>&1 &
        PERF_PID=$!
        sleep 0.2
    fi
    cpu0=$(cpu_ticks "$SERVER_PID"); io0=$(io_syscalls "$SERVER_PID"); cs0=$(ctx_switches "$SERVER_PID")
    "$BENCH_BIN" --addr "127.0.0.1:$port" --protocol "$proto" --hot-key-ratio "$HOT_KEY_RATIO" \
        --pipeline "$PIPELINE" --seed "$SEED" --key-count "$KEY_COUNT" \
        --value-size "$VALUE_SIZE" --json --quiet "$@" >"$out" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    cpu1=$(cpu_ticks "$SERVER_PID"); io1=$(io_syscalls "$SERVER_PID"); cs1=$(ctx_switches "$SERVER_PID")
    if [[ -n "$PERF_PID" ]]; then
        stop_perf
        sys=$(awk -F, '$3 ~ /raw_syscalls:sys_enter/ { print $1; exit }' "$perf_out" 2>/dev/null || true)
    fi
    python3 - "$setup" "$round" "$phase" "$out" "$rc" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" \
        "$((io1 - io0))" "$((cs1 - cs0))" "${sys:-}" >>"$JSONL" <<'EOF'
import json, sys
setup, rnd, phase, path, rc, ticks, hz, io, cs, sc = sys.argv[1:]
rec = {"setup": setup, "round": int(rnd), "phase": phase}
try:
    with open(path) as f:
        r = json.load(f)
except (OSError, ValueError) as e:
    rec["failed"] = f"no bench result (exit {rc}): {e}"
    print(json.dumps(rec))
    sys.exit(0)
if phase == "preload":
    n = r["preload_writes"]
    secs = r["preload_secs"]
    ops = n / secs if secs > 0 else None
    errors = r["preload_errors"]
else:
    n = r["total"]["count"]
    ops = r["total"]["ops_per_sec"]
    errors = r["errors"]
def lat(op, q):
    o = r[op]
    return o["latency_us"][q] / 1000 if o["count"] else None
per = lambda v: v / n if n else None
rec.update({
    "requests": n,
    "ops": ops,
    "errors": errors + (1 if rc != "0" and errors == 0 else 0),
    "cpu_us_per_req": per(int(ticks) / int(hz) * 1e6),
    "syscalls_per_req": per(int(sc)) if sc.isdigit() else None,
    "io_syscalls_per_req": per(int(io)),
    "ctxsw_per_req": per(int(cs)),
})
if phase != "preload":
    for op in ("read", "write"):
        for q in ("p50", "p95", "p99"):
            rec[f"{q}_{op}_ms"] = lat(op, q)
if r.get("error_samples"):
    rec["error_samples"] = r["error_samples"][:3]
print(json.dumps(rec))
EOF
    return 0
}

setups=()
read -r -a setups <<<"$SETUPS"
log "$ROUNDS round(s) of: ${setups[*]}; phases: preload $PHASES; $DURATION each; syscalls: $SYSCALLS"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    for i in "${!setups[@]}"; do
        setup=${setups[$i]}
        port=$((BASE_PORT + i + 1))
        base="$WORK/$setup-$round"
        dir="$base/data"
        mkdir -p "$dir"
        proto=$ESCABELO_PROTOCOL
        if [[ "$setup" == redis-* ]]; then
            proto=resp
        elif [[ "$setup" == go-seed ]]; then
            proto=text
        fi
        if ! start_server "$setup" "$port" "$dir" "$base/server.log"; then
            log "$setup: server did not start (log: $(tail -n 3 "$base/server.log" 2>/dev/null | tr '\n' ' '))"
            python3 -c 'import json,sys; print(json.dumps({"setup": sys.argv[1], "round": int(sys.argv[2]), "phase": "start", "failed": "server did not start"}))' \
                "$setup" "$round" >>"$JSONL"
            stop_server
            continue
        fi
        log "round $round, $setup (port $port): preload"
        run_phase "$setup" "$round" preload "$port" "$proto" \
            --concurrency "$CONCURRENCY" --preload --duration 0s
        for phase in $PHASES; do
            log "round $round, $setup: $phase"
            case "$phase" in
                read80) args=(--concurrency "$CONCURRENCY" --read-ratio 0.8) ;;
                read70) args=(--concurrency "$CONCURRENCY" --read-ratio 0.7) ;;
                write) args=(--concurrency "$CONCURRENCY" --read-ratio 0) ;;
                read) args=(--concurrency "$CONCURRENCY" --read-ratio 1) ;;
                single-write) args=(--concurrency 1 --read-ratio 0) ;;
                single-read) args=(--concurrency 1 --read-ratio 1) ;;
            esac
            run_phase "$setup" "$round" "$phase" "$port" "$proto" \
                "${args[@]}" --assume-preloaded --duration "$DURATION"
        done
        live=""
        if [[ "$setup" != go-seed ]]; then
            live=$(live_bytes "$port" || echo "")
        fi
        record_disk() {
            python3 -c 'import json,sys
s, r, p, d, l = sys.argv[1:]
print(json.dumps({"setup": s, "round": int(r), "phase": p, "disk_bytes": int(d),
                  "live_bytes": int(l) if l.isdigit() else None,
                  "disk_per_live": int(d) / int(l) if l.isdigit() and int(l) else None}))' \
                "$setup" "$round" "$1" "$(du -sB1 "$dir" | cut -f1)" "$live" >>"$JSONL"
        }
        record_disk disk
        if [ "$REST_SECS" -gt 0 ]; then
            sleep "$REST_SECS"
            record_disk disk-rest
        fi
        stop_server
        rm -rf "$base"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load after: $LOAD_AFTER"

status=0
python3 scripts/compare-summary.py "$JSONL" \
    "DURATION=$DURATION CONCURRENCY=$CONCURRENCY KEY_COUNT=$KEY_COUNT ROUNDS=$ROUNDS HOT_KEY_RATIO=$HOT_KEY_RATIO PIPELINE=$PIPELINE VALUE_SIZE=$VALUE_SIZE ESCABELO_PROTOCOL=$ESCABELO_PROTOCOL SYSCALLS=$SYSCALLS" \
    "load average before $LOAD_BEFORE, after $LOAD_AFTER (2 cores: above 2 means contention)" \
    >"$MD" || status=$?
cat "$MD"
log "runs: $JSONL; table: $MD"
exit "$status"
