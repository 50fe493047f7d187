#!/usr/bin/env python3
"""Prints bench/run.sh's tables from the figures it kept (one JSON object a line, each with its
`key`): first every target of the speed issue with the figure that answers it and whether it is
met, then every load run in full.

usage: bench/report.py FIGURES
A target whose figures were not measured (a part of the run was switched off, or failed) says so.
"""
import json
import sys

figures = {}
with open(sys.argv[1]) as lines:
    for line in lines:
        figure = json.loads(line)
        figures[figure["key"]] = figure

run = figures.get("run", {"messages": 1_000_000, "streams": 1000, "backlog": 20_000})
rows_seeded = f"{run['messages']:,} rows"
deep = f"{run['messages'] * 9 // 10:,}"

READS = [
    ("messages", "first page", 10),
    ("newest", "newest page", 10),
    ("from", "`from` (a random seeded sender)", 10),
    ("since", "`since` (the newest 100 rows)", 10),
    ("cursor", f"cursor pages from offset {deep}", 10),
    ("offset", f"`offset` {deep}", 10),
    ("q", "selective `q` (`zebra`, 0.5% of rows)", 25),
    ("q_short", "2-character `q` (`ze`, exact), 1 connection", 200),
    ("stats", "`/stats`", 5),
]


def rate(figure):
    return f"{figure['requests_per_sec']:,.0f} requests/s, p99 {figure['latency_ms']['p99']:.2f} ms"


def verdict(met):
    return "yes" if met else "**no**"


rows = []


def target(name, keys, describe, goal, check):
    """One row: `describe` and `check` get the figures of `keys`, all of which must exist; a
    figure with no threshold has no `check`."""
    if any(key not in figures for key in keys):
        missing = ", ".join(key for key in keys if key not in figures)
        rows.append((name, f"not measured ({missing})", goal, "–"))
        return
    found = [figures[key] for key in keys]
    rows.append((name, describe(*found), goal, "–" if check is None else verdict(check(*found))))


def p99(figure):
    return figure["latency_ms"]["p99"]


target("ingest: SQLite against PostgreSQL (64 connections, unique ids)",
       ["sqlite.ingest", "postgres.ingest"],
       lambda s, p: f"SQLite {rate(s)}; PostgreSQL {rate(p)}",
       "SQLite ≥ PostgreSQL", lambda s, p: s["requests_per_sec"] >= p["requests_per_sec"])
target("ingest on SQLite: rate and p99", ["sqlite.ingest"], rate,
       "on the way to 25,000 requests/s, p99 < 10 ms",
       lambda s: s["requests_per_sec"] >= 25000 and p99(s) < 10)
target("ingest on SQLite: share of the no-storage ceiling", ["sqlite.ingest", "null.ingest"],
       lambda s, n: f"{s['requests_per_sec'] / n['requests_per_sec']:.2f} "
                    f"({s['requests_per_sec']:,.0f} of {n['requests_per_sec']:,.0f})",
       "≥ 0.35", lambda s, n: s["requests_per_sec"] >= 0.35 * n["requests_per_sec"])
target(f"ingest on SQLite at {rows_seeded}", ["sqlite.ingest", "sqlite.ingest_seeded"],
       lambda s, seeded: f"{rate(seeded)}: {seeded['requests_per_sec'] / s['requests_per_sec']:.2f} "
                         "of the empty database's",
       "≥ 0.90 of empty", lambda s, seeded: seeded["requests_per_sec"] >= 0.9 * s["requests_per_sec"])
target("CPU per ingested message (the headline efficiency figure)",
       ["sqlite.ingest", "postgres.ingest"],
       lambda s, p: f"SQLite {s['service_cpu_us']:.1f} µs (store threads {s['storage_cpu_us']:.1f}); "
                    f"PostgreSQL {p['service_cpu_us']:.1f} µs in the service + "
                    f"{p['postgres_cpu_us']:.1f} µs in its server",
       "lower is better (reported, no threshold)", None)
target("HTTP path: CPU per request outside the store's threads", ["sqlite.ingest", "null.ingest"],
       lambda s, n: f"{s['outside_storage_cpu_us']:.1f} µs against the ceiling's "
                    f"{n['service_cpu_us']:.1f} µs ({s['outside_storage_cpu_us'] / n['service_cpu_us']:.2f}×)",
       "≤ 2× the ceiling's", lambda s, n: s["outside_storage_cpu_us"] <= 2 * n["service_cpu_us"])
for backend in ("sqlite", "postgres"):
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    for scenario, label, limit in READS:
        target(f"{name}, {rows_seeded}: {label}", [f"{backend}.read.{scenario}"], rate,
               f"p99 < {limit} ms", lambda f, limit=limit: p99(f) < limit)
target("WhatsApp POSTs of 10 messages against seed-format POSTs (wrk, SQLite)",
       ["sqlite.whatsapp", "sqlite.seed_format"],
       lambda w, s: f"{w['messages_per_sec']:,.0f} against {s['messages_per_sec']:,.0f} messages/s",
       "≥ the seed format's messages/s",
       lambda w, s: w["messages_per_sec"] >= s["messages_per_sec"])
target(f"{run['streams']:,} open streams while ingesting at full speed (SQLite)",
       ["sqlite.ingest", "sqlite.ingest_with_streams", "sqlite.streams"],
       lambda base, loaded, streams: (
           f"ingest {loaded['requests_per_sec']:,.0f} against {base['requests_per_sec']:,.0f} requests/s "
           f"({loaded['requests_per_sec'] / base['requests_per_sec']:.2f}); marker lag p99 "
           f"{streams['lag_ms_p99']} ms; {streams['events_received']:,} events read, "
           f"{streams['streams_closed_as_too_slow']} of {streams['streams']} streams closed as too slow"),
       "≥ 0.80 of the ingest rate, lag p99 < 100 ms",
       lambda base, loaded, streams: loaded["requests_per_sec"] >= 0.8 * base["requests_per_sec"]
       and streams["lag_ms_p99"] is not None and streams["lag_ms_p99"] < 100)
for backend in ("sqlite", "postgres"):
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    target(f"forwarding, {name}: draining a backlog of {run['backlog']:,} to one destination",
           [f"{backend}.forward"], lambda f: f"{f['forward']['drain']['deliveries_per_sec']:,.0f} deliveries/s",
           "≥ 5,000 deliveries/s", lambda f: f["forward"]["drain"]["deliveries_per_sec"] >= 5000)
    target(f"forwarding, {name}: lag at 1,000 messages/s", [f"{backend}.forward"],
           lambda f: f"p99 {f['forward']['lag']['from_answer_ms']['p99']:.2f} ms from the answer, "
                     f"{f['forward']['lag']['delivered']:,} of {f['forward']['lag']['sent']:,} delivered",
           "p99 < 250 ms", lambda f: f["forward"]["lag"]["from_answer_ms"]["p99"] < 250)
memory = sorted((f for f in figures.values() if f["key"].startswith("memory.")),
                key=lambda f: f["peak_mb"])
if memory:
    rows.append(("peak resident memory, every service run",
                 f"{memory[-1]['peak_mb']:.1f} MB at most ({memory[-1]['key'][7:]})", "< 150 MB",
                 verdict(memory[-1]["peak_mb"] < 150)))
for backend in ("sqlite", "postgres"):
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    target(f"start-up to ready at {rows_seeded}, {name}", [f"{backend}.startup"],
           lambda f: f"{f['ms']} ms", "< 500 ms", lambda f: f["ms"] < 500)

print("| target | figure | goal | met? |")
print("|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")

print()
print("| run | requests/s | p50 | p90 | p99 | max | non-200 | service CPU per request |")
print("|---|---|---|---|---|---|---|---|")
for figure in figures.values():
    if "latency_ms" not in figure:
        continue
    latency = figure["latency_ms"]
    bad = sum(count for status, count in figure.get("statuses", {}).items() if status != "200")
    bad += figure.get("connection_errors", 0)
    cpu = f"{figure['service_cpu_us']:.1f} µs" if "service_cpu_us" in figure else "–"
    print(f"| {figure['key']}: {figure['scenario']} | {figure['requests_per_sec']:,.0f} | "
          f"{latency['p50']:.2f} ms | {latency['p90']:.2f} ms | {latency['p99']:.2f} ms | "
          f"{latency['max']:.2f} ms | {bad} | {cpu} |")
