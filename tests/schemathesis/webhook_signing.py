"""Schemathesis hook: signs the generated requests of POST /webhook with WEBHOOK_SECRET, and those
of the providers' routes the providers' way: /webhook/whatsapp with Meta's X-Hub-Signature-256
(WHATSAPP_APP_SECRET), /webhook/twilio with X-Twilio-Signature (TWILIO_AUTH_TOKEN, over
PUBLIC_URL + path + query and the sorted form fields).

Without a valid signature every generated message would stop at the 401 check, and the 200 and
422 answers would never be compared with the document. The signature is computed by a
`requests` auth callable, which runs on the prepared request: it covers exactly the bytes that
are sent, and the generated case itself (its body and its positive or negative mode) is left as
generated.

A case of POST /webhook whose generated headers already name a signature scheme (`X-Signature`,
`X-Hub-Signature-256`, `webhook-*`) is sent as generated: those values are almost surely wrong,
which exercises the 401 answer. The providers' routes document their signature header as
required, so a case that carries it has a generated value that cannot be right: it is signed. A
case without it tests its absence (401) and is sent as generated.
"""

import base64
import hashlib
import hmac
import os
from urllib.parse import parse_qsl, urlsplit

import schemathesis

SECRET = os.environ["WEBHOOK_SECRET"].encode()
WHATSAPP_APP_SECRET = os.environ["WHATSAPP_APP_SECRET"].encode()
TWILIO_AUTH_TOKEN = os.environ["TWILIO_AUTH_TOKEN"].encode()
PUBLIC_URL = os.environ["PUBLIC_URL"].rstrip("/")
SIGNATURE_HEADERS = {"x-signature", "x-hub-signature-256", "webhook-id", "webhook-timestamp", "webhook-signature"}


def sign(request):
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    request.headers["X-Signature"] = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return request


def body_bytes(request):
    body = request.body or b""
    return body.encode() if isinstance(body, str) else body


def sign_whatsapp(request):
    digest = hmac.new(WHATSAPP_APP_SECRET, body_bytes(request), hashlib.sha256).hexdigest()
    request.headers["X-Hub-Signature-256"] = "sha256=" + digest
    return request


def sign_twilio(request):
    url = urlsplit(request.url)
    signed = PUBLIC_URL + url.path + ("?" + url.query if url.query else "")
    fields = parse_qsl(body_bytes(request).decode("utf-8", "replace"), keep_blank_values=True)
    for name, value in sorted(set(fields)):
        signed += name + value
    digest = hmac.new(TWILIO_AUTH_TOKEN, signed.encode(), hashlib.sha1).digest()
    request.headers["X-Twilio-Signature"] = base64.b64encode(digest).decode()
    return request


PROVIDER_SIGNERS = {"/webhook/whatsapp": sign_whatsapp, "/webhook/twilio": sign_twilio}


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() != "POST":
        return
    path = case.operation.path
    if path in PROVIDER_SIGNERS:
        # A case without the header tests its absence (401), and is sent as generated.
        if any(name.lower() in SIGNATURE_HEADERS | {"x-twilio-signature"} for name in (case.headers or {})):
            kwargs["auth"] = PROVIDER_SIGNERS[path]
        return
    if path != "/webhook":
        return
    if any(name.lower() in SIGNATURE_HEADERS for name in (case.headers or {})):
        return
    kwargs["auth"] = sign
