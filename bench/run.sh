#!/usr/bin/env bash
# The standard benchmark of BENCHMARKS.md, in one command that prints one table.
#
# usage: bench/run.sh
# env:   BENCH_SECONDS=30          length of each ingest run
#        BENCH_READ_SECONDS=10     length of each read run
#        BENCH_MESSAGES=1000000    messages seeded for the read scenarios
#        BENCH_SENDERS=10000       senders they come from
#        SQLITE_SYNCHRONOUS=full   passed to the service
# A quick run: BENCH_SECONDS=3 BENCH_READ_SECONDS=2 BENCH_MESSAGES=20000 bench/run.sh
#
# Builds release; then, each server on 127.0.0.1 only and every run bounded in time:
#   1. ingest of unique messages, 64 connections, on a fresh SQLite database;
#   2. the same with 20% duplicates, on another fresh database;
#   3. the same as 1 against examples/null_server (signature and validation, no storage);
#   4. seeds a fresh database through the service's insert code, starts the service on it
#      (timing start-up to ready) and runs every read scenario at 16 connections, then the
#      default page at 64 connections with the bench tool and with wrk, then ingest again;
#   5. prints the table, the services' peak resident memory (VmHWM) and the other figures.
# Needs curl; installs wrk with apt-get when it is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/read_scenarios.sh
source "$here/read_scenarios.sh"
ingest_seconds=${BENCH_SECONDS:-30}
read_seconds=${BENCH_READ_SECONDS:-10}
messages=${BENCH_MESSAGES:-1000000}
senders=${BENCH_SENDERS:-10000}
deep_offset=$((messages * 9 / 10))
secret=bench-secret
port=18110
null_port=18111
binary=$root/target/release/webhook-inbox
null_server=$root/target/release/examples/null_server

(cd "$root" && cargo build --release --locked --bins --examples) >&2
if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rows=()
notes=()
log() { echo "== $*" >&2; }

# wait_ready PORT: polls every 10 ms, for 30 s at most.
wait_ready() {
  for _ in $(seq 3000); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/health/ready" && return 0
    sleep 0.01
  done
  echo "nothing ready on port $1 after 30 s" >&2
  return 1
}

# start_service NAME DB_FILE: the service on a SQLite file, its JSON log in the work folder.
start_service() {
  WEBHOOK_SECRET=$secret DATABASE_URL="sqlite:///$2" HOST=127.0.0.1 PORT=$port \
    SQLITE_SYNCHRONOUS=${SQLITE_SYNCHRONOUS:-full} "$binary" >"$work/$1.log" 2>&1 &
  service=$!
  pids+=("$service")
}

# stop_service NAME: notes the peak resident memory, then SIGTERM.
stop_service() {
  notes+=("peak resident memory of the service, $1: $(awk '/^VmHWM/ {printf "%.1f MB", $2 / 1024}' "/proc/$service/status")")
  kill -TERM "$service"
  wait "$service" || true
}

# ingest LABEL PORT [ARGS…]: one ingest run of the standard shape, its row kept.
ingest() {
  local label=$1 target=$2
  shift 2
  log "$label"
  rows+=("$("$binary" bench ingest --url "http://127.0.0.1:$target" --secret "$secret" \
    --concurrency 64 --duration "${ingest_seconds}s" --senders 1000 --text-bytes 64 \
    --format markdown --label "$label" "$@")")
}

# read_scenario LABEL SCENARIO [ARGS…]: one read run; a failure becomes a note, not a row.
read_scenario() {
  local label=$1 scenario=$2 row
  shift 2
  log "$label"
  if row=$("$binary" bench read --url "http://127.0.0.1:$port" --scenario "$scenario" \
    --duration "${read_seconds}s" --senders "$senders" --seeded-messages "$messages" \
    --offset "$deep_offset" --format markdown --label "$label" "$@" 2>"$work/read.err"); then
    rows+=("$row")
  else
    notes+=("$label: not measured: $(tail -n 1 "$work/read.err")")
  fi
}

# client_cpu NAME ROW: notes how much CPU the load generator itself used for the row's rate,
# from the user and system seconds that `time` left in $work/cpu.
client_cpu() {
  local rps seconds
  rps=$(cut -d'|' -f3 <<<"$2" | tr -d ' ,')
  seconds=$(tail -n 1 "$work/cpu" | awk '{print $1 + $2}')
  notes+=("$(awk -v name="$1" -v s="$seconds" -v d="$read_seconds" -v rps="$rps" 'BEGIN {
    printf "CPU of the load generator, %s: %.2f s in %d s (%.2f cores) for %s requests/s, %.0f µs per request", name, s, d, s / d, rps, s * 1e6 / (rps * d) }')")
}

# compare_clients PATH: GET PATH at 64 connections, first with the bench tool, then with wrk;
# both rows, and the CPU each client used.
compare_clients() {
  local label="GET /messages (first page), 64 connections" row
  TIMEFORMAT='%U %S'
  log "$label: bench tool"
  { time "$binary" bench read --url "http://127.0.0.1:$port" --scenario messages --concurrency 64 \
    --duration "${read_seconds}s" --format markdown --label "$label: bench tool" >"$work/row"; } 2>"$work/cpu"
  row=$(cat "$work/row")
  rows+=("$row")
  client_cpu "bench tool" "$row"
  log "$label: wrk"
  { time wrk -t2 -c64 -d"${read_seconds}s" --latency "http://127.0.0.1:$port$1" >"$work/wrk.txt"; } 2>"$work/cpu"
  row=$(wrk_row "$label: wrk" "$work/wrk.txt")
  rows+=("$row")
  client_cpu "wrk" "$row"
}

# wrk_row LABEL FILE: wrk's --latency output as a row of the same table.
wrk_row() {
  awk -v label="$1" '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      return v * 1000
    }
    $1 == "Latency" && NF >= 4 { max = ms($4) }
    $1 == "50%" { p50 = ms($2) }
    $1 == "90%" { p90 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { rps = $2 }
    /Non-2xx or 3xx responses:/ { bad += $NF }
    /Socket errors:/ { gsub(",", ""); bad += $4 + $6 + $8 + $10 }
    END {
      rounded = sprintf("%.0f", rps); grouped = ""
      while (length(rounded) > 3) { grouped = "," substr(rounded, length(rounded) - 2) grouped; rounded = substr(rounded, 1, length(rounded) - 3) }
      printf "| %s | %s%s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %d |\n", label, rounded, grouped, p50, p90, p99, max, bad
    }' "$2"
}

start_service ingest-unique "$work/ingest-unique.db"
wait_ready $port
ingest "ingest, unique ids, 64 connections" $port
stop_service "ingest of unique ids"

start_service ingest-duplicates "$work/ingest-duplicates.db"
wait_ready $port
ingest "ingest, 20% duplicates, 64 connections" $port --duplicate-ratio 0.2
stop_service "ingest with duplicates"

WEBHOOK_SECRET=$secret HOST=127.0.0.1 PORT=$null_port "$null_server" 2>"$work/null.log" &
null=$!
pids+=("$null")
for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$null_port") 2>/dev/null && break; sleep 0.01; done
ingest "ingest, unique ids, 64 connections: null server (no storage)" $null_port
kill -TERM "$null"
wait "$null" || true

log "seeding $messages messages from $senders senders"
seed=$("$binary" bench seed --database-url "sqlite:///$work/read.db" --messages "$messages" \
  --senders "$senders" --text-bytes 64 --progress false)
notes+=("seed: $(grep -o '"inserted":[0-9]*' <<<"$seed" | cut -d: -f2) messages in $(grep -o '"seconds":[0-9.]*' <<<"$seed" | cut -d: -f2 | xargs printf '%.1f') s ($(grep -o '"messages_per_sec":[0-9.]*' <<<"$seed" | cut -d: -f2 | xargs printf '%.0f') messages/s), through Store::insert with 256 in flight")
notes+=("database file after seeding: $(du -m "$work/read.db" | cut -f1) MB (plus $(du -m "$work/read.db-wal" 2>/dev/null | cut -f1 || echo 0) MB of WAL)")

started=$(date +%s%N)
start_service read "$work/read.db"
wait_ready $port
notes+=("start-up to ready on the seeded database: $((($(date +%s%N) - started) / 1000000)) ms (polled every 10 ms)")

run_read_scenarios
compare_clients /messages
ingest "ingest, unique ids, 64 connections, on the seeded database" $port
stop_service "seeded database, every read scenario, then ingest"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu), commit $(git -C "$root" rev-parse --short HEAD)"
echo "ingest ${ingest_seconds} s per run, reads ${read_seconds} s per run at 16 connections unless said, $messages seeded messages from $senders senders, SQLITE_SYNCHRONOUS=${SQLITE_SYNCHRONOUS:-full}"
echo
echo "| scenario | requests/s | p50 | p90 | p99 | max | non-200 |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
printf -- '- %s\n' "${notes[@]}"
