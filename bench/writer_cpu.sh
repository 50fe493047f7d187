#!/usr/bin/env bash
# CPU of the SQLite writer thread per ingested message: the figure that decides ingest speed
# while that one thread is saturated, and one that moves less than requests/s when the machine
# is shared. Starts BINARY on DB (created when missing), runs `bench ingest` at 64 connections,
# and reads the thread's user and system time from /proc before and after; also the time of the
# checkpoint and WAL sync threads, where the binary has them, so that work moved off the writer
# is still counted. A second line says how the writer spent the run (on a CPU, waiting for one,
# or waiting for messages and I/O, from /proc's schedstat) and the batches it committed (from the
# service's own histograms).
#
# usage: bench/writer_cpu.sh BINARY DB [SECONDS]        (default 10; env passes to the service)
#        CONCURRENCY=N (default 64) sets the load generator's connections.
# A/B:   for b in A B A B; do rm -f /tmp/ab.db*; bench/writer_cpu.sh ./$b /tmp/ab.db; done
set -euo pipefail
binary=$1 db=$2 seconds=${3:-10} port=${PORT:-18112} concurrency=${CONCURRENCY:-64}
WEBHOOK_SECRET=testsecret DATABASE_URL="sqlite:///$db" PORT=$port "$binary" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
thread() { grep -l "$1" /proc/$server/task/*/comm | head -1 | cut -d/ -f5; }
writer=$(thread sqlite-writer)
helpers=$(thread sqlite-checkpoi || true; thread sqlite-wal-sync || true)
cpu() { awk '{print $14, $15}' "/proc/$server/task/$1/stat"; }
# User and system ticks of the checkpoint and WAL sync threads together.
helpers_cpu() { for tid in $helpers; do cpu "$tid"; done | awk '{u += $1; s += $2} END {print u + 0, s + 0}'; }
# Nanoseconds on a CPU and waiting in the run queue for one.
schedstat() { awk '{print $1, $2}' "/proc/$server/task/$writer/schedstat"; }
# Sums and counts of the writer's batch-size and commit-duration histograms, the commit time in
# ms: from writer_commit_duration_seconds, or from writer_commit_duration_ms in the binaries
# before its rename, so that an A/B may set an older binary against a newer one.
batches() {
  curl -sf "http://127.0.0.1:$port/metrics" |
    awk '/^writer_batch_size_(sum|count) |^writer_commit_duration_(seconds|ms)_sum / {v[$1] = $2}
         END {print v["writer_batch_size_sum"] + 0, v["writer_batch_size_count"] + 0,
                    v["writer_commit_duration_seconds_sum"] * 1000 + v["writer_commit_duration_ms_sum"]}'
}
before=$(cpu "$writer") before_helpers=$(helpers_cpu) before_sched=$(schedstat) before_batches=$(batches)
report=$("$binary" bench ingest --url "http://127.0.0.1:$port" --secret testsecret --duration "${seconds}s" \
  --concurrency "$concurrency" --format json)
after=$(cpu "$writer") after_helpers=$(helpers_cpu) after_sched=$(schedstat) after_batches=$(batches)
python3 - "$before" "$after" "$before_helpers" "$after_helpers" "$report" \
  "$before_sched" "$after_sched" "$before_batches" "$after_batches" <<'PY'
import json, os, sys
tick = os.sysconf("SC_CLK_TCK")
def seconds(before, after):
    (user0, sys0), (user1, sys1) = map(int, before.split()), map(int, after.split())
    return (user1 - user0) / tick, (sys1 - sys0) / tick
user, system = seconds(sys.argv[1], sys.argv[2])
helpers = sum(seconds(sys.argv[3], sys.argv[4]))
report = json.loads(sys.argv[5]); n = report["requests"]
print(f'{report["requests_per_sec"]:,.0f} requests/s, p99 {report["latency_ms"]["p99"]} ms, '
      f'writer {user + system:.2f} s CPU (user {user:.2f}, system {system:.2f}), '
      f'{(user + system) / n * 1e6:.1f} µs per message; checkpoint and WAL sync threads '
      f'{helpers:.2f} s, {helpers / n * 1e6:.1f} µs per message; {n} messages')
(on_cpu, queued) = (b - a for a, b in zip(map(int, sys.argv[6].split()), map(int, sys.argv[7].split())))
(messages, commits, commit_ms) = (b - a for a, b in zip(map(float, sys.argv[8].split()), map(float, sys.argv[9].split())))
wall = report["seconds"] * 1e9
print(f'writer: on a CPU {on_cpu / wall:.0%} of the run, waiting for one {queued / wall:.0%}, '
      f'otherwise waiting for messages or I/O; {commits:.0f} commits of {messages / commits:.1f} messages '
      f'on average, {commit_ms / commits:.2f} ms each ({commit_ms / messages * 1e3:.0f} µs per message)')
PY
