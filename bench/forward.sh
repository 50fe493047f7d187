#!/usr/bin/env bash
# Forwarding: release build, fresh database, one destination that answers 204 at once
# (`webhook-inbox bench forward`, which is also the load generator).
#
# usage: bench/forward.sh [BACKLOG] [RATE] [SECONDS]   (defaults 20000, 1000, 20)
# env:   BACKEND=sqlite|postgres                     (default sqlite)
#        FORWARD_CONCURRENCY                         (default: the service's, 32)
#        HOLD=true|false                             (default true: the backlog waits, then
#                                                     drains; false: forwarding runs beside the
#                                                     ingest)
#        TEST_DATABASE_URL                           (default postgres://postgres@127.0.0.1:5432/test;
#                                                     a fresh schema is made in it and dropped after)
#        BINARY                                      (default: this tree's release build, built first)
# Prints the tool's JSON: the drain (deliveries per second once a backlog of BACKLOG messages is
# released) and the lag from the POST's answer to the delivery at RATE messages per second.
set -euo pipefail
backlog=${1:-20000}
rate=${2:-1000}
seconds=${3:-20}
backend=${BACKEND:-sqlite}
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${BINARY:-}" ]; then
  binary=$BINARY
else
  binary="$here/../target/release/webhook-inbox"
  (cd "$here/.." && cargo build --release --locked)
fi
work=$(mktemp -d)
server=
pg_server=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
schema="wi_bench_fwd_$$"
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$backend" = postgres ] && psql "$pg_server" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

case $backend in
  sqlite) url="sqlite:///$work/app.db" ;;
  postgres)
    psql "$pg_server" -qc "CREATE SCHEMA $schema"
    case $pg_server in *\?*) separator='&' ;; *) separator='?' ;; esac
    url="$pg_server${separator}options=-csearch_path%3D$schema,public" ;;
  *) echo "BACKEND must be sqlite or postgres" >&2; exit 2 ;;
esac

receiver=127.0.0.1:18190
env WEBHOOK_SECRET=testsecret DATABASE_URL="$url" HOST=127.0.0.1 PORT=18090 \
  FORWARD_URL="http://$receiver/hooks" FORWARD_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
  ${FORWARD_CONCURRENCY:+FORWARD_CONCURRENCY=$FORWARD_CONCURRENCY} \
  "$binary" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/health/ready >/dev/null && break; sleep 0.1; done
"$binary" bench forward --url http://127.0.0.1:18090 --secret testsecret --listen "$receiver" \
  --backlog "$backlog" --rate "$rate" --duration "${seconds}s" --hold "${HOLD:-true}"
