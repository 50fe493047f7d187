"""Schemathesis hook: signs the generated requests of POST /webhook with WEBHOOK_SECRET.

Without a valid signature every generated message would stop at the 401 check, and the 200 and
422 answers would never be compared with the document. The signature is computed by a
`requests` auth callable, which runs on the prepared request: it covers exactly the bytes that
are sent, and the generated case itself (its body and its positive or negative mode) is left as
generated.

A case whose generated headers already name a signature scheme (`X-Signature`,
`X-Hub-Signature-256`, `webhook-*`) is sent as generated: those values are almost surely wrong,
which exercises the 401 answer.
"""

import hashlib
import hmac
import os

import schemathesis

SECRET = os.environ["WEBHOOK_SECRET"].encode()
SIGNATURE_HEADERS = {"x-signature", "x-hub-signature-256", "webhook-id", "webhook-timestamp", "webhook-signature"}


def sign(request):
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    request.headers["X-Signature"] = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return request


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/webhook" or case.method.upper() != "POST":
        return
    if any(name.lower() in SIGNATURE_HEADERS for name in (case.headers or {})):
        return
    kwargs["auth"] = sign
