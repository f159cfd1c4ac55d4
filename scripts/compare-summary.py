#!/usr/bin/env python3
"""Summarises the JSONL written by scripts/compare.sh as Markdown tables.

Usage: compare-summary.py RUNS.jsonl [CONFIG-LINE] [NOTE-LINE]

Every figure is the median over the rounds; ops/s also shows the range.
Ratios are Escabelo / Redis (and / the original Go server, setup
go-seed, when it ran), computed per round (same round, same phase) and
then the median taken. Exits 1 if any run failed or reported errors.
"""

import json
import statistics
import sys

PHASE_ORDER = ["preload", "read80", "read70", "write", "read", "single-write", "single-read"]
PHASE_TITLE = {
    "preload": "preload (every key written once, 50 connections; ops/s = load rate)",
    "read80": "80% reads",
    "read70": "70% reads",
    "write": "writes only",
    "read": "reads only",
    "single-write": "one connection, one request at a time: writes",
    "single-read": "one connection, one request at a time: reads",
}
PAIRS_FIRST = [("escabelo-os", "redis-everysec"), ("escabelo-sync", "redis-always")]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def main():
    path = sys.argv[1]
    config = sys.argv[2] if len(sys.argv) > 2 else ""
    note = sys.argv[3] if len(sys.argv) > 3 else ""
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))

    setups = list(dict.fromkeys(r["setup"] for r in rows))
    phases = [p for p in PHASE_ORDER if any(r["phase"] == p for r in rows)]
    ok = [r for r in rows if "failed" not in r]
    failed = [r for r in rows if "failed" in r]

    def runs(setup, phase):
        return [r for r in ok if r["setup"] == setup and r["phase"] == phase]

    out = ["# Escabelo vs Redis, escabelo-bench on the same machine", ""]
    if config:
        out += [f"`{config}`", ""]
    if note:
        out += [note, ""]
    out += [
        "Medians over the rounds (ops/s: median, then min-max). Latency in ms. "
        "Server CPU, syscalls and context switches per request are the server "
        "process's, sampled around each phase.",
        "",
    ]
    for phase in phases:
        out += [f"## {PHASE_TITLE[phase]}", ""]
        if phase == "preload":
            out += [
                "| setup | runs | keys/s | range | cpu µs/req | syscalls/req | ctxsw/req | errors |",
                "|---|---|---|---|---|---|---|---|",
            ]
        else:
            out += [
                "| setup | runs | ops/s | range | read p50 | read p95 | read p99 | "
                "write p50 | write p95 | write p99 | cpu µs/req | syscalls/req | "
                "ctxsw/req | errors |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
        for s in setups:
            rs = runs(s, phase)
            if not rs:
                continue
            ops = [r["ops"] for r in rs if r.get("ops") is not None]
            rng = f"{min(ops):,.0f}-{max(ops):,.0f}" if ops else "n/a"
            common_tail = [
                fmt(med(r.get("cpu_us_per_req") for r in rs), ".1f"),
                fmt(med(r.get("syscalls_per_req") for r in rs), ".2f"),
                fmt(med(r.get("ctxsw_per_req") for r in rs), ".2f"),
                str(sum(r.get("errors", 0) for r in rs)),
            ]
            cells = [s, str(len(rs)), fmt(med(ops), ",.0f"), rng]
            if phase != "preload":
                for op in ("read", "write"):
                    for q in ("p50", "p95", "p99"):
                        cells.append(fmt(med(r.get(f"{q}_{op}_ms") for r in rs), ".3f"))
            out.append("| " + " | ".join(cells + common_tail) + " |")
        out.append("")

    disk = [r for r in ok if r["phase"] == "disk"]
    for phase, title in (
        ("disk", "disk after the last phase"),
        ("disk-rest", "disk at rest (REST_SECS after the last request)"),
    ):
        rows = [r for r in ok if r["phase"] == phase]
        if not rows:
            continue
        out += [
            f"## {title}",
            "",
            "| setup | disk/live | disk MB | live MB |",
            "|---|---|---|---|",
        ]
        for s in setups:
            rs = [r for r in rows if r["setup"] == s]
            if rs:
                mb = lambda k: med((r[k] / 1e6) if r.get(k) is not None else None for r in rs)
                out.append(
                    f"| {s} | {fmt(med(r.get('disk_per_live') for r in rs), '.3f')} | "
                    f"{fmt(mb('disk_bytes'), '.1f')} | {fmt(mb('live_bytes'), '.1f')} |"
                )
        out.append("")

    esc = [s for s in setups if s.startswith("escabelo")]
    # What Escabelo is measured against: Redis, and the original Go server.
    refs = [s for s in setups if s.startswith("redis") or s == "go-seed"]
    pairs = [p for p in PAIRS_FIRST if p[0] in esc and p[1] in refs]
    pairs += [(e, r) for e in esc for r in refs if (e, r) not in pairs]
    if pairs:
        out += [
            "## ratios, Escabelo / Redis" + (" or the Go server" if "go-seed" in refs else ""),
            "",
            "Median over rounds of the same-round ratio. ops/s: above 1 is better "
            "for Escabelo; the rest: below 1 is better. The pairs that matter come "
            "first (os vs everysec, sync vs always).",
            "",
            "| phase | pair | ops/s | read p95 | write p95 | cpu/req | syscalls/req |",
            "|---|---|---|---|---|---|---|",
        ]

        def ratio(e, r, phase, key, floor=1e-9):
            vals = []
            for a in (x for x in ok if x["setup"] == e and x["phase"] == phase):
                for b in (x for x in ok if x["setup"] == r and x["phase"] == phase):
                    if a["round"] != b["round"]:
                        continue
                    va, vb = a.get(key), b.get(key)
                    if va is not None and vb is not None and vb >= floor:
                        vals.append(va / vb)
            return med(vals)

        for phase in phases:
            for e, r in pairs:
                cells = [
                    phase,
                    f"{e} / {r}",
                    fmt(ratio(e, r, phase, "ops"), ".2f"),
                    fmt(ratio(e, r, phase, "p95_read_ms"), ".2f"),
                    fmt(ratio(e, r, phase, "p95_write_ms"), ".2f"),
                    fmt(ratio(e, r, phase, "cpu_us_per_req"), ".2f"),
                    fmt(ratio(e, r, phase, "syscalls_per_req"), ".2f"),
                ]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if disk:
            out += ["| disk/live | pair | ratio |", "|---|---|---|"]
            for phase, name in (("disk", "disk/live"), ("disk-rest", "disk/live at rest")):
                for e, r in pairs:
                    # A Redis without persistence keeps ~nothing on disk: no ratio.
                    v = ratio(e, r, phase, "disk_per_live", 0.01)
                    if v is not None:
                        out.append(f"| {name} | {e} / {r} | {fmt(v, '.2f')} |")
            out.append("")

    if failed:
        out += ["## failures", ""]
        for r in failed:
            out.append(f"- {r['setup']} round {r.get('round')} {r['phase']}: {r['failed']}")
        out.append("")
    errs = [r for r in ok if r.get("errors")]
    for r in errs:
        samples = "; ".join(r.get("error_samples", []))
        out.append(f"- errors: {r['setup']} round {r['round']} {r['phase']}: {r['errors']} {samples}")
    print("\n".join(out))
    return 1 if failed or errs else 0


if __name__ == "__main__":
    sys.exit(main())
