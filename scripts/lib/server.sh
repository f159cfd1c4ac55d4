# shellcheck shell=bash
# Helpers shared by scripts/soak.sh and scripts/scale.sh (sourced, not
# run): start a release server on a data directory, wait for it, ask it
# for `status`, and read its memory and file figures from /proc.
# The caller sets `set -euo pipefail` and a trap that calls stop_server.

server_pid=""

# Builds the release binaries when missing.
ensure_binaries() {
    if [ ! -x target/release/escabelo ] || [ ! -x target/release/escabelo-bench ]; then
        echo "== cargo build --release"
        cargo build --release
    fi
}

# start_server PORT DATA_DIR LOG: starts the server in the background and
# waits (at most 60 s) until it accepts connections; sets server_pid.
start_server() {
    local port="$1" data="$2" log="$3"
    target/release/escabelo --bind 127.0.0.1 --port "$port" --data-dir "$data" \
        >>"$log" 2>&1 &
    server_pid=$!
    wait_for_port "$port" 600
}

# wait_for_port PORT TENTHS: waits until 127.0.0.1:PORT answers `status`,
# checking every 0.1 s, at most TENTHS times; fails if the server died.
wait_for_port() {
    local port="$1" tries="$2" i
    for ((i = 0; i < tries; i++)); do
        if status_line "$port" >/dev/null 2>&1; then
            return 0
        fi
        if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the server exited; see its log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "the server did not answer on port $port" >&2
    return 1
}

# status_line PORT: prints the metrics line of `status` (name=value ...).
# A subshell: a failed `exec` redirection would end the calling shell.
status_line() (
    port="$1"
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'status\r' >&3
    IFS= read -r -t 5 header <&3
    IFS= read -r -d $'\r' -t 5 metrics <&3
    exec 3<&-
    [ "$header" = "well going our operation" ] || exit 1
    printf '%s\n' "$metrics"
)

# metric LINE NAME: the value of NAME in a status line.
metric() {
    printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# rss_kib PID: resident memory in KiB.
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# open_files PID: number of open file descriptors.
open_files() {
    find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l
}

# du_bytes DIR: bytes the directory's files take on disk.
du_bytes() {
    du -sb "$1" | cut -f1
}

# stop_server: SIGTERM, then SIGKILL after 10 s; safe to call twice.
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}

# free_port: a TCP port nothing listens on now.
free_port() {
    local p i
    for ((i = 0, p = 20000 + RANDOM % 20000; i < 1000; i++, p++)); do
        if ! (exec 4<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# ensure_gnuplot: installs Debian's gnuplot-nox when gnuplot is missing.
ensure_gnuplot() {
    command -v gnuplot >/dev/null 2>&1 && return 0
    local sudo_cmd=""
    if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
        sudo_cmd="sudo"
    fi
    echo "== installing gnuplot-nox (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get install -y -q gnuplot-nox >/dev/null \
        || { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q gnuplot-nox >/dev/null; }
}
