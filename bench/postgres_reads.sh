#!/usr/bin/env bash
# The read scenarios of bench/run.sh against the PostgreSQL backend: seeds a fresh database on
# the server at PG_ADMIN_URL through the service's insert code, starts the release binary on it,
# and prints one table. The database is dropped at the end. After seeding it runs VACUUM ANALYZE,
# as autovacuum would in time (this project's CI machine runs PostgreSQL with autovacuum off;
# without it the seed leaves 990,000 dead row versions in sender_counts and no statistics).
# VACUUM=0 skips it.
#
# usage: bench/postgres_reads.sh
# env:   PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432   (a role that may create databases)
#        PG_URL_QUERY=?sslmode=disable   (appended to the database URL; empty by default)
#        BENCH_READ_SECONDS=10  BENCH_MESSAGES=1000000  BENCH_SENDERS=10000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/read_scenarios.sh
source "$root/bench/read_scenarios.sh"
admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
read_seconds=${BENCH_READ_SECONDS:-10}
messages=${BENCH_MESSAGES:-1000000}
senders=${BENCH_SENDERS:-10000}
deep_offset=$((messages * 9 / 10))
database=webhook_inbox_bench_reads
port=18120
binary=$root/target/release/webhook-inbox
log() { echo "-- $*" >&2; }

(cd "$root" && cargo build --release --locked --bins) >&2
psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database" >&2
url="$admin/$database${PG_URL_QUERY:-}"
log "seeding $messages messages from $senders senders"
seed=$("$binary" bench seed --database-url "$url" --messages "$messages" --senders "$senders" \
  --text-bytes 64 --progress false)
if [ "${VACUUM:-1}" != 0 ]; then
  log "VACUUM ANALYZE"
  psql "$url" -qc "VACUUM ANALYZE" >&2
fi

WEBHOOK_SECRET=bench-secret DATABASE_URL="$url" HOST=127.0.0.1 PORT=$port "$binary" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $database" >&2' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done

rows=()
read_scenario() {
  log "$1"
  rows+=("$("$binary" bench read --url "http://127.0.0.1:$port" --scenario "$2" \
    --duration "${read_seconds}s" --senders "$senders" --seeded-messages "$messages" \
    --offset "$deep_offset" --format markdown --label "$1")")
}
run_read_scenarios

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, commit $(git -C "$root" rev-parse --short HEAD), PostgreSQL $(psql "$admin/postgres" -Atc 'SHOW server_version')"
echo "reads ${read_seconds} s per run at 16 connections, $messages seeded messages from $senders senders, VACUUM ANALYZE after seeding: $([ "${VACUUM:-1}" != 0 ] && echo yes || echo no); seed: $seed"
echo
echo "| scenario | requests/s | p50 | p90 | p99 | max | non-200 |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
