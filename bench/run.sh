#!/usr/bin/env bash
# The standard benchmark of BENCHMARKS.md: every figure of its current table, both backends, in
# one command that prints the table.
#
# usage: bench/run.sh
# env:   BENCH_SECONDS=30          length of each ingest run
#        BENCH_READ_SECONDS=10     length of each read run
#        BENCH_MESSAGES=1000000    messages seeded for the read scenarios
#        BENCH_SENDERS=10000       senders they come from
#        BENCH_STREAMS=1000        streams open during the streams-while-ingesting run
#        BENCH_POSTGRES=1          0 leaves PostgreSQL out
#        BENCH_FIGURES=FILE        also keeps every figure there, one JSON object a line
#                                  (bench/report.py FILE prints the tables again)
#        PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432   (a role that may create databases and,
#                                  to switch autovacuum on for the run, change the server's settings)
# A quick run: BENCH_SECONDS=3 BENCH_READ_SECONDS=2 BENCH_MESSAGES=20000 BENCH_STREAMS=50 bench/run.sh
#
# Builds release; then, each server on 127.0.0.1 only, LOG_LEVEL=INFO, every run bounded in time:
#   SQLite   1. ingest of unique messages, 64 connections, on a fresh database, with the CPU the
#               service spent per request, split between the store's threads and the rest;
#            2. the same with 20% duplicates; 3. the same against examples/null_server (signature
#               and validation, no storage: the ceiling);
#            4. 1,000 streams of GET /messages/stream read by bench/streams.py while 1. runs again;
#            5. WhatsApp POSTs of 10 messages and seed-format POSTs, both with wrk (bench/ingest.sh),
#               in messages per second;
#            6. forwarding to one destination (bench/forward.sh: draining 20,000, lag at 1,000/s);
#            7. seeds a database through the service's insert code, starts the service on it
#               (timing start-up to ready), runs every read scenario at 16 connections, then 1.
#   PostgreSQL (a fresh database each): 1., 6., and 7. without the ingest, after autovacuum (on for
#            the run, as in production; no manual VACUUM) has analysed the seeded table.
# Then prints the targets table (bench/report.py), every run in full, and the other figures.
# Needs curl and python3; installs wrk with apt-get when it is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/read_scenarios.sh
source "$here/read_scenarios.sh"
ingest_seconds=${BENCH_SECONDS:-30}
read_seconds=${BENCH_READ_SECONDS:-10}
messages=${BENCH_MESSAGES:-1000000}
senders=${BENCH_SENDERS:-10000}
streams=${BENCH_STREAMS:-1000}
postgres=${BENCH_POSTGRES:-1}
admin=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
deep_offset=$((messages * 9 / 10))
secret=bench-secret
port=18110
null_port=18111
binary=$root/target/release/webhook-inbox
null_server=$root/target/release/examples/null_server
bench_database=webhook_inbox_bench_run

(cd "$root" && cargo build --release --locked --bins --examples) >&2
if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null
fi

ulimit -n 8192 2>/dev/null || true
work=$(mktemp -d)
figures=$work/figures.jsonl
touch "$figures"
pids=()
autovacuum_was=
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$postgres" = 1 ]; then
    psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $bench_database" >/dev/null 2>&1 || true
    [ "$autovacuum_was" = off ] && set_autovacuum off
  fi
  rm -rf "$work"
}
trap cleanup EXIT

notes=()
log() { echo "== $*" >&2; }

# keep KEY JSON: one figure that no load run measured (start-up, memory, streams, wrk rates).
keep() {
  python3 -c 'import json, sys; f = json.loads(sys.argv[2]); f["key"] = sys.argv[1]; print(json.dumps(f))' \
    "$1" "$2" >>"$figures"
}

# wait_ready PORT: polls every 10 ms, for 30 s at most.
wait_ready() {
  for _ in $(seq 3000); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/health/ready" && return 0
    sleep 0.01
  done
  echo "nothing ready on port $1 after 30 s" >&2
  return 1
}

# start_service NAME DATABASE_URL: the service, its JSON log in the work folder; notes how long
# it took to be ready as the figure NAME.startup.
start_service() {
  local started
  started=$(date +%s%N)
  WEBHOOK_SECRET=$secret DATABASE_URL="$2" HOST=127.0.0.1 PORT=$port LOG_LEVEL=INFO \
    "$binary" >"$work/$1.log" 2>&1 &
  service=$!
  pids+=("$service")
  wait_ready $port
  keep "$1.startup" "{\"ms\": $((($(date +%s%N) - started) / 1000000))}"
}

# stop_service NAME: keeps the peak resident memory as memory.NAME, then SIGTERM.
stop_service() {
  keep "memory.$1" "{\"peak_mb\": $(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$service/status")}"
  kill -TERM "$service"
  wait "$service" || true
}

sqlite_url() { echo "sqlite:///$work/$1.db"; }
postgres_url() {
  psql "$admin/postgres" -qc "DROP DATABASE IF EXISTS $bench_database" -c "CREATE DATABASE $bench_database" >&2
  echo "$admin/$bench_database"
}
set_autovacuum() {
  psql "$admin/postgres" -qAtc "ALTER SYSTEM SET autovacuum = $1" -c "SELECT pg_reload_conf()" >/dev/null
}

# ingest KEY LABEL PORT PID [ARGS…]: one ingest run of the standard shape, with its CPU.
ingest() {
  local key=$1 label=$2 target=$3 pid=$4
  shift 4
  log "$label"
  python3 "$here/measure.py" "$figures" "$key" "$pid" -- "$binary" bench ingest \
    --url "http://127.0.0.1:$target" --secret "$secret" --concurrency 64 \
    --duration "${ingest_seconds}s" --senders 1000 --text-bytes 64 --format json --label "$label" "$@"
}

# read_scenario LABEL SCENARIO [ARGS…]: one read run, kept as BACKEND.read.SCENARIO (or the
# key that --key names); a failure becomes a note.
read_scenario() {
  local label=$1 scenario=$2 key=$2
  shift 2
  if [ "${1:-}" = --key ]; then key=$2; shift 2; fi
  log "$backend: $label"
  python3 "$here/measure.py" "$figures" "$backend.read.$key" "$service" -- "$binary" bench read \
    --url "http://127.0.0.1:$port" --scenario "$scenario" --duration "${read_seconds}s" \
    --senders "$senders" --seeded-messages "$messages" --offset "$deep_offset" --format json \
    --label "$label" "$@" 2>"$work/read.err" ||
    notes+=("$backend, $label: not measured: $(tail -n 1 "$work/read.err")")
}

# seed_and_read BACKEND DATABASE_URL: seeds, starts the service (start-up timed) and runs every
# read scenario, plus the short `q`.
seed_and_read() {
  backend=$1
  log "$backend: seeding $messages messages from $senders senders"
  local seed
  seed=$("$binary" bench seed --database-url "$2" --messages "$messages" --senders "$senders" \
    --text-bytes 64 --progress false)
  notes+=("$backend seed: $(grep -o '"inserted":[0-9]*' <<<"$seed" | cut -d: -f2) messages in $(grep -o '"seconds":[0-9.]*' <<<"$seed" | cut -d: -f2 | xargs printf '%.1f') s, through Store::insert with 256 in flight")
  [ "$backend" = postgres ] && wait_for_autoanalyze "$2"
  start_service "$backend" "$2"
  run_read_scenarios
  # A user typing a first letter or two: one request at a time.
  read_scenario "GET /messages?q=ze (2 characters, exact), 1 connection" q --key q_short --term ze --concurrency 1
}

# wait_for_autoanalyze URL: waits (10 minutes at most) until autovacuum has analysed the seeded
# messages, as it would within a minute or so in production; notes how long that took.
wait_for_autoanalyze() {
  local started=$SECONDS
  log "postgres: waiting for autovacuum to analyse the seeded table"
  until [ "$(psql "$1" -Atc "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'messages' AND last_autoanalyze IS NOT NULL")" = 1 ]; do
    [ $((SECONDS - started)) -gt 600 ] && { notes+=("postgres: autovacuum did not analyse messages within 10 minutes"); return; }
    sleep 5
  done
  notes+=("postgres: autovacuum analysed the seeded messages $((SECONDS - started)) s after the seed ended")
}

# wrk_messages_per_sec KEY SOURCE: bench/ingest.sh's wrk run on a fresh SQLite database, kept as
# messages (not requests) per second.
wrk_messages_per_sec() {
  local per_post=1 output
  [ "$2" = whatsapp ] && per_post=10
  log "wrk: $2"
  output=$(BINARY=$binary SOURCE=$2 PER_POST=$per_post "$here/ingest.sh" "$ingest_seconds" 2>&1)
  keep "$1" "$(awk -v per_post="$per_post" '$1 == "Requests/sec:" {printf "{\"requests_per_sec\": %s, \"messages_per_sec\": %s}", $2, $2 * per_post}' <<<"$output")"
}

# forward KEY BACKEND: bench/forward.sh's drain and lag.
forward() {
  log "$2: forwarding"
  keep "$1" "$(BINARY=$binary BACKEND=$2 TEST_DATABASE_URL="$admin/postgres" "$here/forward.sh" 20000 1000 "$((ingest_seconds * 2 / 3))" 2>/dev/null | tail -n 1)"
}

# streams_while_ingesting: BENCH_STREAMS streams read as fast as bench/streams.py can while the
# standard ingest runs against the same service.
streams_while_ingesting() {
  start_service streams "$(sqlite_url streams)"
  log "sqlite: $streams streams while ingesting"
  WEBHOOK_SECRET=$secret HOLD_SECONDS=$ingest_seconds READY_FILE=$work/streams.ready \
    python3 "$here/streams.py" "http://127.0.0.1:$port" "$service" "$streams" >"$work/streams.json" &
  local reader=$!
  until [ -e "$work/streams.ready" ]; do
    kill -0 "$reader" 2>/dev/null || { wait "$reader"; return 1; }
    sleep 0.1
  done
  ingest sqlite.ingest_with_streams "ingest, unique ids, 64 connections, $streams streams open" $port "$service"
  wait "$reader"
  keep sqlite.streams "$(cat "$work/streams.json")"
  stop_service "sqlite, $streams streams while ingesting"
}

keep run "{\"messages\": $messages, \"streams\": $streams, \"backlog\": 20000}"
start_service sqlite.ingest "$(sqlite_url ingest-unique)"
ingest sqlite.ingest "ingest, unique ids, 64 connections" $port "$service"
stop_service "sqlite, ingest of unique ids"

start_service sqlite.duplicates "$(sqlite_url ingest-duplicates)"
ingest sqlite.ingest_duplicates "ingest, 20% duplicates, 64 connections" $port "$service" --duplicate-ratio 0.2
stop_service "sqlite, ingest with duplicates"

WEBHOOK_SECRET=$secret HOST=127.0.0.1 PORT=$null_port "$null_server" 2>"$work/null.log" &
null=$!
pids+=("$null")
for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$null_port") 2>/dev/null && break; sleep 0.01; done
ingest null.ingest "ingest, unique ids, 64 connections: null server (no storage)" $null_port "$null"
kill -TERM "$null"
wait "$null" || true

streams_while_ingesting
wrk_messages_per_sec sqlite.seed_format webhook
wrk_messages_per_sec sqlite.whatsapp whatsapp
forward sqlite.forward sqlite

seed_and_read sqlite "$(sqlite_url read)"
notes+=("SQLite database file after seeding: $(du -m "$work/read.db" | cut -f1) MB (plus $(du -m "$work/read.db-wal" 2>/dev/null | cut -f1 || echo 0) MB of WAL)")
ingest sqlite.ingest_seeded "ingest, unique ids, 64 connections, on the seeded database" $port "$service"
stop_service "sqlite, seeded database: every read scenario, then ingest"

if [ "$postgres" = 1 ]; then
  autovacuum_was=$(psql "$admin/postgres" -Atc "SHOW autovacuum")
  [ "$autovacuum_was" = on ] || set_autovacuum on
  start_service postgres.ingest "$(postgres_url)"
  ingest postgres.ingest "PostgreSQL: ingest, unique ids, 64 connections" $port "$service"
  stop_service "postgres, ingest of unique ids"
  forward postgres.forward postgres
  seed_and_read postgres "$(postgres_url)"
  stop_service "postgres, seeded database: every read scenario"
  notes+=("PostgreSQL $(psql "$admin/postgres" -Atc 'SHOW server_version'), autovacuum on for the run (it was $autovacuum_was)")
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu), commit $(git -C "$root" rev-parse --short HEAD)"
echo "ingest ${ingest_seconds} s per run at 64 connections, reads ${read_seconds} s per run at 16 connections, $messages seeded messages from $senders senders, LOG_LEVEL=INFO, SQLITE_SYNCHRONOUS=full"
echo
python3 "$here/report.py" "$figures"
[ -n "${BENCH_FIGURES:-}" ] && cp "$figures" "$BENCH_FIGURES"
echo
printf -- '- %s\n' "${notes[@]}"
