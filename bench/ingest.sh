#!/usr/bin/env bash
# Ingest of unique messages: release build, fresh database, wrk at 64 connections in all.
#
# usage: bench/ingest.sh [SECONDS]            (default 15)
# env:   BACKEND=sqlite|postgres              (default sqlite)
#        SOURCE=webhook|whatsapp              (default webhook; whatsapp: POSTs of PER_POST
#                                              messages to /webhook/whatsapp, PER_POST default 10)
#        SQLITE_SYNCHRONOUS=full|normal       (default full)
#        REPLICAS=N                           (postgres only; default 1: N servers on one
#                                              database, one wrk per server, 64/N connections each)
#        TEST_DATABASE_URL                    (default postgres://postgres@127.0.0.1:5432/test;
#                                              a fresh schema is made in it and dropped after)
#        FORWARD_URL, FORWARD_SECRET          (passed to the servers: ingest while forwarding)
#        BINARY                               (default: this tree's release build, built first;
#                                              set it to compare another build, e.g. an older one)
# Needs wrk (Debian: apt-get install wrk), python3, curl, and psql for postgres.
set -euo pipefail
seconds=${1:-15}
backend=${BACKEND:-sqlite}
replicas=${REPLICAS:-1}
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${BINARY:-}" ]; then
  binary=$BINARY
else
  binary="$here/../target/release/webhook-inbox"
  (cd "$here/.." && cargo build --release --locked)
fi
work=$(mktemp -d)
servers=()
pg_server=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
schema="wi_bench_$$"
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$backend" = postgres ] && psql "$pg_server" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

case $backend in
  sqlite)
    [ "$replicas" = 1 ] || { echo "SQLite serves one process: REPLICAS must be 1" >&2; exit 2; }
    url="sqlite:///$work/app.db" ;;
  postgres)
    psql "$pg_server" -qc "CREATE SCHEMA $schema"
    case $pg_server in *\?*) separator='&' ;; *) separator='?' ;; esac
    url="$pg_server${separator}options=-csearch_path%3D$schema,public" ;;
  *) echo "BACKEND must be sqlite or postgres" >&2; exit 2 ;;
esac

# About 20,000 requests a second at most are expected: make enough bodies that none repeats.
source=${SOURCE:-webhook}
per_post=${PER_POST:-10}
provider_env=()
case $source in
  webhook) python3 "$here/make_bodies.py" $((seconds * 40000)) ;;
  whatsapp)
    python3 "$here/make_whatsapp_bodies.py" $((seconds * 40000 / per_post)) "$per_post" bench-app-secret
    provider_env=(WHATSAPP_APP_SECRET=bench-app-secret WHATSAPP_VERIFY_TOKEN=bench-verify-token MAX_BODY_BYTES=1048576) ;;
  *) echo "SOURCE must be webhook or whatsapp" >&2; exit 2 ;;
esac

for n in $(seq 0 $((replicas - 1))); do
  port=$((18090 + n))
  env WEBHOOK_SECRET=testsecret DATABASE_URL="$url" SQLITE_SYNCHRONOUS="${SQLITE_SYNCHRONOUS:-full}" \
    ${provider_env[@]+"${provider_env[@]}"} ${FORWARD_URL:+FORWARD_URL=$FORWARD_URL FORWARD_SECRET=$FORWARD_SECRET} \
    HOST=127.0.0.1 PORT=$port "$binary" >"server-$n.log" 2>&1 &
  servers+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
done

if [ "$replicas" = 1 ]; then
  wrk -t2 -c64 -d"${seconds}s" -s "$here/unique_posts.lua" http://127.0.0.1:18090 -- 2 0 "$source"
else
  loads=()
  for n in $(seq 0 $((replicas - 1))); do
    wrk -t1 -c$((64 / replicas)) -d"${seconds}s" -s "$here/unique_posts.lua" \
      "http://127.0.0.1:$((18090 + n))" -- "$replicas" "$n" "$source" >"wrk-$n.txt" &
    loads+=($!)
  done
  wait "${loads[@]}"
  for n in $(seq 0 $((replicas - 1))); do echo "-- replica $n"; cat "wrk-$n.txt"; done
fi
echo "stored: $(curl -s http://127.0.0.1:18090/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_messages"])')"
