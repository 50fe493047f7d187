#!/usr/bin/env bash
# Ingest of unique messages: release build, fresh database, wrk at 64 connections.
# usage: bench/ingest.sh [SECONDS] [SQLITE_SYNCHRONOUS]   (defaults: 15 full)
# Needs wrk (Debian: apt-get install wrk) and python3.
set -euo pipefail
seconds=${1:-15}
sync=${2:-full}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
cargo build --release --locked
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
# About 20,000 requests a second are expected: make enough bodies that none repeats.
python3 "$here/make_bodies.py" $((seconds * 60000))
WEBHOOK_SECRET=testsecret DATABASE_URL="sqlite:///$work/app.db" SQLITE_SYNCHRONOUS="$sync" \
  HOST=127.0.0.1 PORT=18090 "$here/../target/release/webhook-inbox" >server.log 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/health/ready >/dev/null && break; sleep 0.1; done
wrk -t2 -c64 -d"${seconds}s" -s "$here/unique_posts.lua" http://127.0.0.1:18090 -- 2
echo "stored: $(curl -s http://127.0.0.1:18090/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_messages"])')"
