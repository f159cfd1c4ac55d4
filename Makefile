# Mirrors the original Escabelo Makefile. The bench targets expect a server
# already listening on localhost:8080 (start one with `make run`).

CARGO ?= cargo
BENCH := target/release/escabelo-bench

.PHONY: build run test bench bench-intensive bench-write compare

build:
	$(CARGO) build --release

run:
	$(CARGO) run --release --bin escabelo

test:
	$(CARGO) test --workspace --release

# Standard benchmark: 30 s, 10 clients, 80% reads.
bench: build
	$(BENCH) --addr localhost:8080 --duration 30s --concurrency 10 --read-ratio 0.8

# Intensive benchmark: 60 s, 50 clients.
bench-intensive: build
	$(BENCH) --addr localhost:8080 --duration 60s --concurrency 50 --read-ratio 0.8

# Write-heavy benchmark: 20% reads, 80% writes.
bench-write: build
	$(BENCH) --addr localhost:8080 --duration 30s --concurrency 10 --read-ratio 0.2

# Escabelo (os, sync) against Redis (AOF always, everysec, none); see the script.
compare:
	scripts/compare.sh
