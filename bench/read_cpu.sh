#!/usr/bin/env bash
# The service's CPU per request of one read scenario (all threads), next to the bench tool's
# requests/s and latencies. Starts BINARY on an existing DB, warms up for 2 s, then measures.
#
# usage: bench/read_cpu.sh BINARY DB SCENARIO [CONCURRENCY] [SECONDS]   (default 16, 10)
set -euo pipefail
binary=$1 db=$2 scenario=$3 concurrency=${4:-16} seconds=${5:-10} port=${PORT:-18118}
WEBHOOK_SECRET=testsecret DATABASE_URL="sqlite:///$db" PORT=$port "$binary" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
read_bench() {
  "$binary" bench read --url "http://127.0.0.1:$port" --scenario "$scenario" \
    --concurrency "$concurrency" --format json "$@"
}
read_bench --duration 2s >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
before=$(cpu)
report=$(read_bench --duration "${seconds}s")
after=$(cpu)
python3 - "$before" "$after" "$report" <<'PY'
import json, os, sys
report = json.loads(sys.argv[3]); n = report["requests"]
seconds = (int(sys.argv[2]) - int(sys.argv[1])) / os.sysconf("SC_CLK_TCK")
latency = report["latency_ms"]
print(f'{report["requests_per_sec"]:,.0f} requests/s, p50 {latency["p50"]} ms, p99 {latency["p99"]} ms, '
      f'service {seconds:.2f} s CPU, {seconds / n * 1e3:.2f} ms per request, {n} requests')
PY
