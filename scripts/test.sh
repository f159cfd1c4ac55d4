#!/usr/bin/env bash
# The project's test command (README.md, and .ci/run after its checks):
# installs what the Redis client and metrics tests need (scripts/test-deps.sh),
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/test-deps.sh
cargo test --workspace --release
