#!/usr/bin/env bash
# Installs what the Redis client and metrics tests need, when missing:
#   - Debian's redis-tools (redis-cli, redis-benchmark) and redis-server,
#   - Debian's nutcracker (twemproxy),
#   - Debian's prometheus (for promtool) and prometheus-redis-exporter,
#   - PyPI's `redis` (redis-py) in a virtual environment under target/,
#   - npm's `ioredis` under target/.
# Safe to run repeatedly: anything already present is left alone. A tool
# that cannot be installed is reported; the tests that need it then print
# `SKIPPED: <reason>` instead of failing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root="$(pwd)"
deps="$root/target/test-deps"
mkdir -p "$deps"

sudo_cmd=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
    sudo_cmd="sudo"
fi

# Installs Debian packages with apt-get (refreshing the package lists once
# if the first attempt fails); returns non-zero if they could not be.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get install -y -q "$@" >/dev/null && return 0
    $sudo_cmd apt-get update -q >/dev/null || true
    $sudo_cmd apt-get install -y -q "$@" >/dev/null
}

# Stops the system service a package just started; the tests start their
# own processes on free ports.
stop_service() {
    if command -v service >/dev/null 2>&1; then
        $sudo_cmd service "$1" stop >/dev/null 2>&1 || true
    fi
}

if ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1 \
    || ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing redis-tools and redis-server (apt-get)"
        apt_install redis-tools redis-server \
            || echo "test-deps: could not install redis-tools/redis-server"
        # The package starts a system redis-server on 6379.
        stop_service redis-server
    else
        echo "test-deps: no apt-get; redis-cli tests will be skipped"
    fi
fi

# twemproxy for crates/server/tests/twemproxy.rs. Debian puts it in
# /usr/sbin, which a non-root PATH may lack (the test looks there too).
if ! command -v nutcracker >/dev/null 2>&1 && [ ! -x /usr/sbin/nutcracker ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing nutcracker (twemproxy, apt-get)"
        apt_install nutcracker || echo "test-deps: could not install nutcracker"
        # The package may start a system nutcracker on 22121/22222.
        stop_service nutcracker
    else
        echo "test-deps: no apt-get; the twemproxy test will be skipped"
    fi
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-redis-exporter >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing prometheus (promtool) and prometheus-redis-exporter (apt-get)"
        apt_install prometheus prometheus-redis-exporter \
            || echo "test-deps: could not install prometheus/prometheus-redis-exporter"
        # The packages may start system services (a Prometheus server on
        # 9090, its node exporter, a Redis exporter on 9121); the tests run
        # their own.
        for svc in prometheus prometheus-node-exporter prometheus-redis-exporter; do
            stop_service "$svc"
        done
    else
        echo "test-deps: no apt-get; promtool and redis_exporter tests will be skipped"
    fi
fi

venv="$deps/venv"
if ! "$venv/bin/python" -c 'import redis' >/dev/null 2>&1; then
    if command -v python3 >/dev/null 2>&1; then
        echo "== installing redis-py into $venv"
        python3 -m venv "$venv" && "$venv/bin/pip" install -q redis \
            || echo "test-deps: could not install redis-py"
    else
        echo "test-deps: no python3; redis-py tests will be skipped"
    fi
fi

node_dir="$deps/node"
if [ ! -d "$node_dir/node_modules/ioredis" ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "== installing ioredis into $node_dir"
        mkdir -p "$node_dir"
        (cd "$node_dir" && npm install --silent --no-audit --no-fund ioredis >/dev/null) \
            || echo "test-deps: could not install ioredis"
    else
        echo "test-deps: no npm; ioredis tests will be skipped"
    fi
fi
echo "== test dependencies ready"
exit 0
