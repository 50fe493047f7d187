#!/usr/bin/env bash
# Checks the running server's real answers against its own GET /openapi.json with schemathesis:
# documented status codes, content types, headers and schemas, no 5xx, 401 without the token,
# 405 for undocumented methods. Bodies of POST /webhook and of the providers' routes are signed by
# webhook_signing.py, so the 200 and 422 paths are exercised too.
#
#   tests/schemathesis/run.sh [BINARY]     (default target/release/webhook-inbox)
#
# Needs curl, jq and `schemathesis` on PATH (or SCHEMATHESIS=/path/to/schemathesis); MAX_EXAMPLES
# (default 60) bounds the cases per operation and phase; SCHEMATHESIS_SEED fixes the generation.
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=${1:-target/release/webhook-inbox}
schemathesis=${SCHEMATHESIS:-schemathesis}
port=${SCHEMATHESIS_PORT:-18091}
export WEBHOOK_SECRET=schemathesis-secret
export WHATSAPP_APP_SECRET=schemathesis-whatsapp-app-secret
# The verify token of the handshake's documented example, so that the example is answered 200.
export WHATSAPP_VERIFY_TOKEN=meatyhamhock
export TWILIO_AUTH_TOKEN=schemathesis-twilio-auth-token
export PUBLIC_URL=http://127.0.0.1:$port
# Forwarding to a port where nothing listens: the deliveries API has deliveries to show and
# the re-queue writes have something to do.
export FORWARD_URL=http://127.0.0.1:9/hooks
export FORWARD_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
token=schemathesis-token
work=$(mktemp -d)

API_TOKEN=$token DATABASE_URL="sqlite:///$work/app.db" MAX_BODY_BYTES=1048576 \
  HOST=127.0.0.1 PORT=$port "$binary" >"$work/server.log" 2>"$work/server.err" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
  sleep 0.1
done

# One worker: with two, schemathesis's threads build Python ASTs at once (hypothesis reads the
# source of its filter lambdas), which CPython 3.11 does not allow for ("SystemError: AST
# constructor recursion depth mismatch", seen as a runtime error on one operation in about half
# of the runs with the providers' operations added).
status=0
NO_COLOR=1 PYTHONPATH="tests/schemathesis${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=webhook_signing \
  "$schemathesis" --config-file tests/schemathesis/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --max-examples "${MAX_EXAMPLES:-60}" \
  --seed "${SCHEMATHESIS_SEED:-20251115}" \
  --workers 1 \
  --request-timeout 10 \
  || status=$?

# The server's own view of what was asked. Signed, valid messages must have been stored: without
# them the hook did not sign and the 200 answer of POST /webhook went unchecked.
echo "-- answers by path and status (from the server's access log)"
jq -r 'select(.path != null) | "\(.path | if startswith("/webhook") or startswith("/messages") or startswith("/stats") or startswith("/deliveries") or startswith("/health") or startswith("/metrics") or startswith("/openapi") or startswith("/assets") or . == "/" then . else "(other)" end) \(.status)"' \
  "$work/server.log" 2>/dev/null | sort | uniq -c | sort -k2,2 -k3,3n
stats=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/stats")
echo "-- messages stored by signed requests, per source: $(echo "$stats" | jq -c .messages_per_source)"
for source in webhook whatsapp twilio; do
  if [ "$(echo "$stats" | jq ".messages_per_source.$source")" -lt 1 ]; then
    echo "no generated $source message was stored: is the signing hook loaded?" >&2
    status=1
  fi
done

# The server's own view: an answer of 500 or above is a failure even if schemathesis missed it.
server_errors=$(jq -c 'select(.path != null and .status != null and .status >= 500)' "$work/server.log" | head -5)
if [ -n "$server_errors" ]; then
  echo "the server answered 5xx:" >&2
  echo "$server_errors" >&2
  status=1
fi
[ "$status" -eq 0 ] || { echo "--- server stderr"; cat "$work/server.err"; }
exit "$status"
