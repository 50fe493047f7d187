"""Writes bodies.txt: N unique, signed WhatsApp Cloud API notifications of M text messages each,
one "hex-signature<TAB>body" a line (the signature is X-Hub-Signature-256 without `sha256=`).

usage: make_whatsapp_bodies.py N [MESSAGES] [APP_SECRET]   (10 messages, app secret bench-app-secret)
"""
import hashlib
import hmac
import json
import sys

n = int(sys.argv[1])
per_post = int(sys.argv[2]) if len(sys.argv) > 2 else 10
secret = (sys.argv[3] if len(sys.argv) > 3 else "bench-app-secret").encode()
with open("bodies.txt", "w") as out:
    for i in range(n):
        messages = [
            {
                "from": f"91{9000000000 + (i * per_post + k) % 1000}",
                "id": f"wamid.load-{i}-{k}",
                "timestamp": str(1736935200 + i),
                "type": "text",
                "text": {"body": f"load test message {i}-{k}"},
            }
            for k in range(per_post)
        ]
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "102290129340398",
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
                                    "messages": messages,
                                },
                            }
                        ],
                    }
                ],
            },
            separators=(",", ":"),
        )
        signature = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        out.write(f"{signature}\t{body}\n")
