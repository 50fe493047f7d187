#!/usr/bin/env bash
# Where the CPU of an ingest run goes: each thread group of the server and the load generator, in
# µs per request, and the machine's user/system/idle/iowait shares over the run. Runs `bench
# ingest` for SECONDS at CONCURRENCY connections against BINARY serving a fresh database in a
# temporary folder, or, with `null` as BINARY, against examples/null_server (no storage).
#
# usage: bench/ingest_cpu.sh BINARY|null [SECONDS]     (default 10; CONCURRENCY=N, default 64)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=$1 seconds=${2:-10} concurrency=${CONCURRENCY:-64} port=${PORT:-18150}
bench_tool=$root/target/release/webhook-inbox
folder=$(mktemp -d)
if [ "$target" = null ]; then
  WEBHOOK_SECRET=testsecret PORT=$port "$root/target/release/examples/null_server" >/dev/null 2>&1 &
else
  WEBHOOK_SECRET=testsecret DATABASE_URL="sqlite:///$folder/app.db" PORT=$port "$target" >/dev/null 2>&1 &
fi
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$folder"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
# Ticks of CPU per thread name (threads of one name summed).
threads() {
  for task in /proc/$server/task/*; do
    echo "$(tr ' ' '_' <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
  done | awk '{ticks[$1] += $2} END {for (name in ticks) print name, ticks[name]}' | sort
}
before=$(threads) machine_before=$(head -1 /proc/stat)
/usr/bin/time -f "%U %S" -o "$folder/loadgen" "$bench_tool" bench ingest --url "http://127.0.0.1:$port" \
  --secret testsecret --duration "${seconds}s" --concurrency "$concurrency" --format json >"$folder/report"
after=$(threads) machine_after=$(head -1 /proc/stat)
python3 - "$before" "$after" "$machine_before" "$machine_after" "$folder/report" "$folder/loadgen" <<'PY'
import json, os, sys
tick = os.sysconf("SC_CLK_TCK")
report = json.load(open(sys.argv[5])); n = report["requests"]
print(f'{report["requests_per_sec"]:,.0f} requests/s, p99 {report["latency_ms"]["p99"]} ms, {n} requests')
parse = lambda text: {name: int(ticks) for name, ticks in (line.split() for line in text.splitlines())}
before, after = parse(sys.argv[1]), parse(sys.argv[2])
total = 0.0
for name in sorted(after):
    micros = (after[name] - before.get(name, 0)) / tick / n * 1e6
    total += micros
    if micros >= 0.05:
        print(f'  {name:<18} {micros:6.1f} µs per request')
user, system = map(float, open(sys.argv[6]).read().split()[:2])
loadgen = (user + system) / n * 1e6
print(f'  {"load generator":<18} {loadgen:6.1f} µs per request')
print(f'  {"all":<18} {total + loadgen:6.1f} µs per request')
names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
deltas = [b - a for a, b in zip(map(int, sys.argv[3].split()[1:9]), map(int, sys.argv[4].split()[1:9]))]
print("  machine: " + ", ".join(f"{name} {d / sum(deltas):.0%}" for name, d in zip(names, deltas) if name != "nice"))
PY
