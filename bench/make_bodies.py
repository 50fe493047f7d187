"""Writes bodies.txt: N unique, correctly signed /webhook bodies, one "signature<TAB>body" a line.

usage: make_bodies.py N [SECRET]   (SECRET defaults to testsecret)
"""
import hashlib
import hmac
import json
import sys

n = int(sys.argv[1])
secret = (sys.argv[2] if len(sys.argv) > 2 else "testsecret").encode()
with open("bodies.txt", "w") as out:
    for i in range(n):
        body = json.dumps(
            {
                "message_id": f"load-{i}",
                "from": f"+91{9000000000 + i % 1000}",
                "to": "+14155550100",
                "ts": f"2025-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}Z",
                "text": f"load test message {i}",
            },
            separators=(",", ":"),
        )
        signature = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        out.write(f"{signature}\t{body}\n")
