//! Hostile input over real HTTP (issue 5, point 2): a generator of malformed and
//! adversarial requests is run against the real binary, and every answer is judged.
//!
//! Asserted for every request: no 5xx, no hang (each request has a bound), every answer of the
//! application is JSON and, when not 200, has a `detail`; the process never panics and is alive at
//! the end; its memory (VmRSS) stays flat once warmed up; and exactly the messages that should be
//! stored are stored. Requests that are not HTTP at all (a broken request line or header block,
//! conflicting framing) never reach the application: hyper answers them with a bare 4xx and closes,
//! which is counted apart and is the one answer without a JSON body.
//!
//! CI sends 4 000 requests; `HARDENING_LONG=1` sends 40 000 (`HARDENING_REQUESTS=N` sets any
//! number). `HARDENING_SEED=N` repeats a run. The summary (requests by kind, answers by status)
//! is printed on stderr: `cargo test --test hostile -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::child::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use webhook_inbox::signature::signer;

/// Every request (and its answer) must be done within this, or the service hangs.
const REQUEST_BOUND: Duration = Duration::from_secs(20);
const MAX_BODY: usize = 65_536;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Growth of VmRSS allowed between the end of the warm-up and the end of the run.
const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;

// ---------------------------------------------------------------------------------------------
// What is sent and what must come back
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    TruncatedJson,
    DeeplyNested,
    HugeNumbers,
    DuplicateKeys,
    InvalidUtf8,
    OverlongUtf8,
    NulBytes,
    NonAsciiDigits,
    WrongTypes,
    MegabyteStrings,
    AroundTheLimit,
    MissingHeaders,
    RepeatedHeaders,
    WrongContentType,
    ChunkedNeverEnds,
    BrokenChunking,
    BrokenQuery,
    SignatureGarbage,
    StandardWebhooksGarbage,
    BadRoutes,
    ProtocolGarbage,
    WhatsappValid,
    WhatsappBroken,
    TwilioValid,
    TwilioBroken,
}

impl Kind {
    /// How often each kind is drawn, out of the sum.
    const WEIGHTS: [(Kind, u64); 26] = [
        (Kind::Valid, 8),
        (Kind::TruncatedJson, 6),
        (Kind::DeeplyNested, 4),
        (Kind::HugeNumbers, 5),
        (Kind::DuplicateKeys, 5),
        (Kind::InvalidUtf8, 5),
        (Kind::OverlongUtf8, 5),
        (Kind::NulBytes, 5),
        (Kind::NonAsciiDigits, 5),
        (Kind::WrongTypes, 6),
        (Kind::MegabyteStrings, 2),
        (Kind::AroundTheLimit, 3),
        (Kind::MissingHeaders, 4),
        (Kind::RepeatedHeaders, 4),
        (Kind::WrongContentType, 4),
        (Kind::ChunkedNeverEnds, 1),
        (Kind::BrokenChunking, 2),
        (Kind::BrokenQuery, 10),
        (Kind::SignatureGarbage, 6),
        (Kind::StandardWebhooksGarbage, 4),
        (Kind::BadRoutes, 4),
        (Kind::ProtocolGarbage, 4),
        (Kind::WhatsappValid, 4),
        (Kind::WhatsappBroken, 6),
        (Kind::TwilioValid, 3),
        (Kind::TwilioBroken, 5),
    ];

    fn draw(rng: &mut Rng) -> Kind {
        let total: u64 = Kind::WEIGHTS.iter().map(|(_, weight)| weight).sum();
        let mut ticket = rng.between(0..total);
        for (kind, weight) in Kind::WEIGHTS {
            if ticket < weight {
                return kind;
            }
            ticket -= weight;
        }
        Kind::Valid
    }
}

/// What must become of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// 200 `{"status":"ok"}`, and the message `id` is stored.
    Stored(String),
    /// 200, and every one of these ids is stored (a provider's batch).
    StoredAll(Vec<String>),
    /// A 4xx; the request stores nothing.
    Refused,
    /// A read: 200 or 422.
    Read,
    /// Framing that HTTP implementations may read either way: a 4xx, or 200 and `id` stored.
    EitherWay(String),
}

/// How a request travels.
#[derive(Debug, Clone)]
enum Wire {
    /// Through an HTTP client: any method, path, headers (any bytes a header may hold) and body.
    Http {
        method: &'static str,
        path: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// Raw bytes on a connection of its own, then silence until the server answers or closes.
    Raw(Vec<u8>),
}

struct Probe {
    kind: Kind,
    wire: Wire,
    expect: Expect,
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

fn valid_message(id: &str) -> Value {
    json!({ "message_id": id, "from": "+919876543210", "to": "+14155550100", "ts": "2025-01-15T10:00:00Z", "text": "hi" })
}

fn signed_headers(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("x-signature".into(), sign(body).into_bytes()),
    ]
}

/// A WhatsApp notification with a text message for each of `ids`.
fn whatsapp_batch(ids: &[String]) -> Value {
    let messages: Vec<Value> = ids
        .iter()
        .map(|id| json!({"from": "447700900123", "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": "hi"}}))
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
        "messages": messages,
    }}]}]})
}

fn whatsapp_post(body: Vec<u8>, expect: Expect, kind: Kind) -> Probe {
    let signature = signer::github(crate::providers::APP_SECRET, &body);
    Probe {
        kind,
        wire: Wire::Http {
            method: "POST",
            path: "/webhook/whatsapp".into(),
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-hub-signature-256".into(), signature.into_bytes()),
            ],
            body,
        },
        expect,
    }
}

/// A form signed as Twilio signs it: over the fields as the service will decode them.
fn twilio_post(body: Vec<u8>, expect: Expect, kind: Kind) -> Probe {
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let url = format!("{}/webhook/twilio", crate::providers::PUBLIC_URL);
    let signature = webhook_inbox::sources::twilio::sign(crate::providers::AUTH_TOKEN, &url, &fields);
    Probe {
        kind,
        wire: Wire::Http {
            method: "POST",
            path: "/webhook/twilio".into(),
            headers: vec![
                (
                    "content-type".into(),
                    b"application/x-www-form-urlencoded".to_vec(),
                ),
                ("x-twilio-signature".into(), signature.into_bytes()),
            ],
            body,
        },
        expect,
    }
}

fn signed_post(body: Vec<u8>, expect: Expect, kind: Kind) -> Probe {
    Probe {
        kind,
        wire: Wire::Http {
            method: "POST",
            path: "/webhook".into(),
            headers: signed_headers(&body),
            body,
        },
        expect,
    }
}

/// A valid message's JSON with the value of `field` replaced by the raw JSON text `raw`.
fn with_raw_field(id: &str, field: &str, raw: &[u8]) -> Vec<u8> {
    let mut message = valid_message(id);
    message[field] = json!("\u{1}PLACEHOLDER\u{1}");
    let text = message.to_string();
    let placeholder = "\"\\u0001PLACEHOLDER\\u0001\"";
    let (before, after) = text.split_once(placeholder).expect("placeholder in the JSON");
    [before.as_bytes(), raw, after.as_bytes()].concat()
}

struct Generator {
    rng: Rng,
    next: usize,
    stored_so_far: Vec<String>,
}

impl Generator {
    fn id(&mut self, tag: &str) -> String {
        self.next += 1;
        format!("{tag}-{:06}", self.next)
    }

    fn probe(&mut self) -> Probe {
        let kind = Kind::draw(&mut self.rng);
        match kind {
            Kind::Valid => self.valid(),
            Kind::TruncatedJson => self.truncated_json(),
            Kind::DeeplyNested => self.deeply_nested(),
            Kind::HugeNumbers => self.huge_numbers(),
            Kind::DuplicateKeys => self.duplicate_keys(),
            Kind::InvalidUtf8 => self.invalid_utf8(),
            Kind::OverlongUtf8 => self.overlong_utf8(),
            Kind::NulBytes => self.nul_bytes(),
            Kind::NonAsciiDigits => self.non_ascii_digits(),
            Kind::WrongTypes => self.wrong_types(),
            Kind::MegabyteStrings => self.megabyte_strings(),
            Kind::AroundTheLimit => self.around_the_limit(),
            Kind::MissingHeaders => self.missing_headers(),
            Kind::RepeatedHeaders => self.repeated_headers(),
            Kind::WrongContentType => self.wrong_content_type(),
            Kind::ChunkedNeverEnds => self.chunked_never_ends(),
            Kind::BrokenChunking => self.broken_chunking(),
            Kind::BrokenQuery => self.broken_query(),
            Kind::SignatureGarbage => self.signature_garbage(),
            Kind::StandardWebhooksGarbage => self.standard_webhooks_garbage(),
            Kind::BadRoutes => self.bad_routes(),
            Kind::ProtocolGarbage => self.protocol_garbage(),
            Kind::WhatsappValid => self.whatsapp_valid(),
            Kind::WhatsappBroken => self.whatsapp_broken(),
            Kind::TwilioValid => self.twilio_valid(),
            Kind::TwilioBroken => self.twilio_broken(),
        }
    }

    /// A WhatsApp notification of 1 to 10 new messages, now and then with a status update.
    fn whatsapp_valid(&mut self) -> Probe {
        let count = self.rng.between(1..11) as usize;
        let ids: Vec<String> = (0..count).map(|_| self.id("wa")).collect();
        let mut payload = whatsapp_batch(&ids);
        if self.rng.chance(3) {
            payload["entry"][0]["changes"]
                .as_array_mut()
                .expect("changes")
                .push(json!({"field": "messages", "value": {"statuses": [{"id": "wamid.x", "status": "read"}]}}));
        }
        whatsapp_post(
            payload.to_string().into_bytes(),
            Expect::StoredAll(ids),
            Kind::WhatsappValid,
        )
    }

    /// A signed WhatsApp batch with one thing broken in one message, or in its shape: refused
    /// whole, none of its messages stored. Now and then the signature is what is wrong.
    fn whatsapp_broken(&mut self) -> Probe {
        let ids: Vec<String> = (0..self.rng.between(2..6)).map(|_| self.id("wa-no")).collect();
        let mut payload = whatsapp_batch(&ids);
        let victim = self.rng.between(0..ids.len() as u64) as usize;
        let message = &mut payload["entry"][0]["changes"][0]["value"]["messages"][victim];
        let long_id = "w".repeat(300);
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let deep: Value = serde_json::from_str(&deep).unwrap_or(Value::Null);
        match self.rng.between(0..12) {
            0 => message["timestamp"] = json!("tomorrow"),
            1 => message["timestamp"] = json!(-5),
            2 => message["from"] = json!("+44 7700"),
            3 => message["from"] = json!(447_700_900_123u64),
            4 => message["id"] = json!(""),
            5 => message["id"] = json!(long_id),
            6 => message["text"]["body"] = json!(12),
            7 => message["text"]["body"] = json!("a\u{0}b"),
            8 => message["text"]["body"] = json!("x".repeat(5000)),
            9 => message["timestamp"] = deep,
            10 => payload["entry"][0]["changes"][0]["value"]["metadata"] = json!({}),
            _ => payload["entry"] = json!({"not": "a list"}),
        }
        let body = payload.to_string().into_bytes();
        let mut probe = whatsapp_post(body, Expect::Refused, Kind::WhatsappBroken);
        if self.rng.chance(5)
            && let Wire::Http { headers, .. } = &mut probe.wire
        {
            headers[1].1 = signer::github("not-the-app-secret", b"other").into_bytes();
        }
        probe
    }

    fn twilio_valid(&mut self) -> Probe {
        let id = self.id("SM");
        let from = if self.rng.chance(2) {
            "whatsapp:+447700900123"
        } else {
            "+14155550100"
        };
        let fields = crate::providers::twilio_form(&id, from, "hi from Twilio");
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        twilio_post(body.into_bytes(), Expect::Stored(id), Kind::TwilioValid)
    }

    /// A signed Twilio form with a field missing or wrong, bytes that are not UTF-8 where a
    /// value should be, or a signature for another URL: refused.
    fn twilio_broken(&mut self) -> Probe {
        let id = self.id("SM-no");
        let mut fields = crate::providers::twilio_form(&id, "+14155550100", "hi");
        let set = |fields: &mut Vec<(String, String)>, name: &str, value: &str| {
            for field in fields.iter_mut().filter(|(field, _)| field == name) {
                field.1 = value.to_owned();
            }
        };
        let mut body = None;
        match self.rng.between(0..8) {
            0 => fields.retain(|(name, _)| name != "MessageSid"),
            1 => fields.retain(|(name, _)| name != "From"),
            2 => set(&mut fields, "From", "MyCompany"),
            3 => set(&mut fields, "To", "whatsapp:14155238886"),
            4 => set(&mut fields, "Body", "nul \u{0} inside"),
            5 => set(&mut fields, "MessageSid", &"S".repeat(300)),
            6 => {
                body = Some(format!(
                    "MessageSid={id}&From=%FF%FE&To=%2B14155238886&Body=%C3%28"
                ))
            }
            _ => set(&mut fields, "MessageSid", ""),
        }
        let body = body.unwrap_or_else(|| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&fields)
                .finish()
        });
        let mut probe = twilio_post(body.into_bytes(), Expect::Refused, Kind::TwilioBroken);
        if self.rng.chance(5)
            && let Wire::Http { path, .. } = &mut probe.wire
        {
            path.push_str("?unsigned=1");
        }
        probe
    }

    fn valid(&mut self) -> Probe {
        // Now and then a resend of a stored message: a duplicate, still 200.
        let id = if !self.stored_so_far.is_empty() && self.rng.chance(20) {
            self.rng.pick(&self.stored_so_far).clone()
        } else {
            let id = self.id("ok");
            self.stored_so_far.push(id.clone());
            id
        };
        let body = valid_message(&id).to_string().into_bytes();
        signed_post(body, Expect::Stored(id), Kind::Valid)
    }

    fn truncated_json(&mut self) -> Probe {
        let id = self.id("no");
        let full = valid_message(&id).to_string().into_bytes();
        let cut = self.rng.between(0..full.len() as u64) as usize;
        signed_post(full[..cut].to_vec(), Expect::Refused, Kind::TruncatedJson)
    }

    fn deeply_nested(&mut self) -> Probe {
        let id = self.id("no");
        let depth = *self.rng.pick(&[129usize, 200, 1_000, 10_000, 30_000, 100_000]);
        let (open, close) = if self.rng.chance(50) {
            ("[", "]")
        } else {
            ("{\"a\":", "}")
        };
        let closed = self.rng.chance(50);
        let nested = format!(
            "{}1{}",
            open.repeat(depth),
            if closed {
                close.repeat(depth)
            } else {
                String::new()
            }
        );
        let body = if self.rng.chance(50) {
            nested.into_bytes()
        } else {
            with_raw_field(&id, "text", nested.as_bytes())
        };
        signed_post(body, Expect::Refused, Kind::DeeplyNested)
    }

    fn huge_numbers(&mut self) -> Probe {
        let id = self.id("num");
        let huge = [
            "1e999999",
            "-1e400",
            "1.7976931348623157e309",
            &"9".repeat(400),
            &format!("0.{}1", "0".repeat(2_000)),
            "123456789012345678901234567890",
            "-0",
            "1E+2147483648",
        ];
        let number = *self.rng.pick(&huge);
        // In a field that must be a string: always refused.
        if self.rng.chance(60) {
            let field = *self.rng.pick(&["message_id", "from", "to", "ts", "text"]);
            return signed_post(
                with_raw_field(&id, field, number.as_bytes()),
                Expect::Refused,
                Kind::HugeNumbers,
            );
        }
        // In an extra field, which is ignored once the JSON parses: a number beyond f64 does not.
        let mut text = valid_message(&id).to_string();
        text.insert_str(1, &format!("\"extra\":{number},"));
        let parses = serde_json::from_str::<Value>(&text).is_ok();
        let expect = if parses {
            Expect::Stored(id)
        } else {
            Expect::Refused
        };
        signed_post(text.into_bytes(), expect, Kind::HugeNumbers)
    }

    fn duplicate_keys(&mut self) -> Probe {
        let first = self.id("dupkey-first");
        let last = self.id("dupkey-last");
        // The last occurrence of a key counts, as in Python's json (the original service).
        let (body, expect) = match self.rng.between(0..3) {
            0 => (
                format!(
                    r#"{{"message_id":"{first}","from":"+1","to":"+2","ts":"2025-01-15T10:00:00Z","message_id":"{last}"}}"#
                ),
                Expect::Stored(last),
            ),
            1 => (
                format!(
                    r#"{{"message_id":"{last}","from":"nope","to":"+2","ts":"2025-01-15T10:00:00Z","from":"+1"}}"#
                ),
                Expect::Stored(last),
            ),
            _ => (
                format!(
                    r#"{{"message_id":"{last}","from":"+1","to":"+2","ts":"2025-01-15T10:00:00Z","from":"nope"}}"#
                ),
                Expect::Refused,
            ),
        };
        signed_post(body.into_bytes(), expect, Kind::DuplicateKeys)
    }

    fn invalid_utf8(&mut self) -> Probe {
        let id = self.id("no");
        let bad: &[&[u8]] = &[
            b"\xff",
            b"\xc3\x28",
            b"\x80",
            b"\xe2\x82",
            b"\xf0\x9f\x98",
            b"a\xfeb",
        ];
        let bytes = *self.rng.pick(bad);
        let field = *self.rng.pick(&["message_id", "from", "text"]);
        let raw = [b"\"".as_slice(), bytes, b"\""].concat();
        signed_post(
            with_raw_field(&id, field, &raw),
            Expect::Refused,
            Kind::InvalidUtf8,
        )
    }

    fn overlong_utf8(&mut self) -> Probe {
        let id = self.id("no");
        let bad: &[&[u8]] = &[
            b"\xc0\xaf",             // '/' in two bytes
            b"\xe0\x80\xaf",         // '/' in three
            b"\xf0\x80\x80\xaf",     // '/' in four
            b"\xc1\xbf",             // overlong DEL
            b"\xed\xa0\x80",         // a UTF-16 surrogate
            b"\xf4\x90\x80\x80",     // past U+10FFFF
            b"\xf8\x88\x80\x80\x80", // a five-byte form
            b"\\ud800",              // a lone surrogate, escaped
            b"\\udfff\\ud800",
        ];
        let bytes = *self.rng.pick(bad);
        let field = *self.rng.pick(&["message_id", "text", "to"]);
        let raw = [b"\"x".as_slice(), bytes, b"\""].concat();
        signed_post(
            with_raw_field(&id, field, &raw),
            Expect::Refused,
            Kind::OverlongUtf8,
        )
    }

    fn nul_bytes(&mut self) -> Probe {
        let id = self.id("no");
        let body = match self.rng.between(0..4) {
            0 => with_raw_field(&id, "message_id", b"\"a\\u0000b\""),
            1 => with_raw_field(&id, "text", b"\"\\u0000\""),
            2 => with_raw_field(&id, "text", b"\"a\x00b\""),
            _ => [valid_message(&id).to_string().as_bytes(), b"\x00"].concat(),
        };
        signed_post(body, Expect::Refused, Kind::NulBytes)
    }

    fn non_ascii_digits(&mut self) -> Probe {
        let id = self.id("no");
        let numbers = [
            "+\u{96f}\u{967}\u{969}", // Devanagari
            "+\u{661}\u{662}\u{663}", // Arabic-Indic
            "+\u{ff19}\u{ff11}",      // fullwidth
            "+\u{b9}\u{b2}\u{b3}",    // superscripts
            "+\u{e51}\u{e52}",        // Thai
            "+\u{1d7d7}\u{1d7d8}",    // mathematical bold
            "\u{ff0b}919876543210",   // a fullwidth plus
            "+91 98765",              // a space
            "+91\u{200b}98",          // a zero-width space
            "+٩١٩٨٧٦٥٤٣٢١٠",
        ];
        let field = *self.rng.pick(&["from", "to"]);
        let mut message = valid_message(&id);
        message[field] = json!(self.rng.pick(&numbers));
        signed_post(
            message.to_string().into_bytes(),
            Expect::Refused,
            Kind::NonAsciiDigits,
        )
    }

    fn wrong_types(&mut self) -> Probe {
        let id = self.id("no");
        let wrong = [
            json!(1),
            json!(1.5),
            json!(true),
            json!([]),
            json!(["+1"]),
            json!({}),
            json!({"a": "b"}),
        ];
        let body = if self.rng.chance(20) {
            let whole = [
                json!([valid_message(&id)]),
                json!("a string"),
                json!(42),
                json!(null),
                json!(true),
            ];
            self.rng.pick(&whole).to_string()
        } else {
            let field = *self.rng.pick(&["message_id", "from", "to", "ts", "text"]);
            let mut message = valid_message(&id);
            message[field] = self.rng.pick(&wrong).clone();
            if field != "text" && self.rng.chance(30) {
                message[field] = Value::Null;
            }
            message.to_string()
        };
        signed_post(body.into_bytes(), Expect::Refused, Kind::WrongTypes)
    }

    fn megabyte_strings(&mut self) -> Probe {
        let id = self.id("no");
        let field = *self.rng.pick(&["message_id", "text", "from", "padding"]);
        let mut message = valid_message(&id);
        message[field] = json!("m".repeat(1 << 20));
        let body = message.to_string().into_bytes();
        if self.rng.chance(50) {
            // Signed or not, it is refused for its size before anything else.
            signed_post(body, Expect::Refused, Kind::MegabyteStrings)
        } else {
            Probe {
                kind: Kind::MegabyteStrings,
                wire: Wire::Http {
                    method: "POST",
                    path: "/webhook".into(),
                    headers: vec![("x-signature".into(), b"00".to_vec())],
                    body,
                },
                expect: Expect::Refused,
            }
        }
    }

    fn around_the_limit(&mut self) -> Probe {
        let id = self.id("edge");
        let offset = *self.rng.pick(&[-2i64, -1, 0, 1, 2, 1000]);
        let target = (MAX_BODY as i64 + offset) as usize;
        let mut message = valid_message(&id);
        message["padding"] = json!("");
        let base = message.to_string().len();
        message["padding"] = json!("p".repeat(target - base));
        let body = message.to_string().into_bytes();
        assert_eq!(body.len(), target);
        let expect = if target <= MAX_BODY {
            Expect::Stored(id)
        } else {
            Expect::Refused
        };
        signed_post(body, expect, Kind::AroundTheLimit)
    }

    fn missing_headers(&mut self) -> Probe {
        let id = self.id("hdr");
        let body = valid_message(&id).to_string().into_bytes();
        match self.rng.between(0..3) {
            0 => Probe {
                kind: Kind::MissingHeaders,
                wire: Wire::Http {
                    method: "POST",
                    path: "/webhook".into(),
                    headers: vec![("content-type".into(), b"application/json".to_vec())],
                    body,
                },
                expect: Expect::Refused,
            },
            1 => Probe {
                // No Content-Type: the signature vouches for the body.
                kind: Kind::MissingHeaders,
                wire: Wire::Http {
                    method: "POST",
                    path: "/webhook".into(),
                    headers: vec![("x-signature".into(), sign(&body).into_bytes())],
                    body,
                },
                expect: Expect::Stored(id),
            },
            _ => {
                // No Content-Length: a chunked body.
                let head = format!(
                    "POST /webhook HTTP/1.1\r\nHost: h\r\nX-Signature: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    sign(&body)
                );
                let mut raw = head.into_bytes();
                for chunk in body.chunks(7) {
                    raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    raw.extend_from_slice(chunk);
                    raw.extend_from_slice(b"\r\n");
                }
                raw.extend_from_slice(b"0\r\n\r\n");
                Probe {
                    kind: Kind::MissingHeaders,
                    wire: Wire::Raw(raw),
                    expect: Expect::Stored(id),
                }
            }
        }
    }

    fn repeated_headers(&mut self) -> Probe {
        let id = self.id("rep");
        let body = valid_message(&id).to_string().into_bytes();
        let signature = sign(&body);
        let raw_with = |extra: &str, body: &[u8]| {
            let head = format!(
                "POST /webhook HTTP/1.1\r\nHost: h\r\nX-Signature: {signature}\r\n{extra}Connection: close\r\n\r\n"
            );
            [head.as_bytes(), body].concat()
        };
        let length = body.len();
        match self.rng.between(0..6) {
            0 => Probe {
                kind: Kind::RepeatedHeaders,
                wire: Wire::Http {
                    method: "POST",
                    path: "/webhook".into(),
                    headers: vec![
                        ("x-signature".into(), signature.clone().into_bytes()),
                        ("x-signature".into(), signature.into_bytes()),
                    ],
                    body,
                },
                expect: Expect::Refused,
            },
            1 => Probe {
                kind: Kind::RepeatedHeaders,
                wire: Wire::Http {
                    method: "POST",
                    path: "/webhook".into(),
                    headers: vec![
                        ("x-signature".into(), signature.into_bytes()),
                        ("content-type".into(), b"application/json".to_vec()),
                        ("content-type".into(), b"text/html".to_vec()),
                    ],
                    body,
                },
                expect: Expect::Stored(id),
            },
            // Two lengths that disagree: request smuggling's classic, refused by hyper.
            2 => Probe {
                kind: Kind::RepeatedHeaders,
                wire: Wire::Raw(raw_with(
                    &format!("Content-Length: {length}\r\nContent-Length: {}\r\n", length + 1),
                    &body,
                )),
                expect: Expect::Refused,
            },
            3 => Probe {
                kind: Kind::RepeatedHeaders,
                wire: Wire::Raw(raw_with(
                    &format!("Content-Length: {length}\r\nContent-Length: {length}\r\n"),
                    &body,
                )),
                expect: Expect::EitherWay(id),
            },
            4 => Probe {
                kind: Kind::RepeatedHeaders,
                wire: Wire::Raw(raw_with(
                    &format!("Content-Length: {length}\r\nTransfer-Encoding: chunked\r\n"),
                    &body,
                )),
                expect: Expect::Refused,
            },
            _ => Probe {
                kind: Kind::RepeatedHeaders,
                wire: Wire::Http {
                    method: "GET",
                    path: "/messages".into(),
                    headers: vec![
                        ("authorization".into(), b"Bearer a".to_vec()),
                        ("authorization".into(), b"Bearer b".to_vec()),
                        ("x-request-id".into(), b"one".to_vec()),
                        ("x-request-id".into(), b"two".to_vec()),
                    ],
                    body: Vec::new(),
                },
                expect: Expect::Read,
            },
        }
    }

    fn wrong_content_type(&mut self) -> Probe {
        let id = self.id("ctype");
        let body = valid_message(&id).to_string().into_bytes();
        let types: &[&[u8]] = &[
            b"text/plain",
            b"multipart/form-data; boundary=x",
            b"application/x-www-form-urlencoded",
            b"application/xml",
            b"image/png",
            b";;;",
            b"\xff\xfe",
            b"application/json; charset=utf-16",
        ];
        let signed = self.rng.chance(70);
        let mut headers = vec![("content-type".to_owned(), self.rng.pick(types).to_vec())];
        if signed {
            headers.push(("x-signature".into(), sign(&body).into_bytes()));
        }
        Probe {
            kind: Kind::WrongContentType,
            wire: Wire::Http {
                method: "POST",
                path: "/webhook".into(),
                headers,
                body,
            },
            expect: if signed {
                Expect::Stored(id)
            } else {
                Expect::Refused
            },
        }
    }

    fn chunked_never_ends(&mut self) -> Probe {
        let id = self.id("no");
        let body = valid_message(&id).to_string();
        let head = format!(
            "POST /webhook HTTP/1.1\r\nHost: h\r\nX-Signature: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            sign(body.as_bytes())
        );
        let sent = self.rng.between(0..body.len() as u64) as usize;
        let raw = format!("{head}{:x}\r\n{}", body.len(), &body[..sent]).into_bytes();
        Probe {
            kind: Kind::ChunkedNeverEnds,
            wire: Wire::Raw(raw),
            expect: Expect::Refused,
        }
    }

    fn broken_chunking(&mut self) -> Probe {
        let id = self.id("chunk");
        let body = valid_message(&id).to_string();
        let broken = [
            format!("zz\r\n{body}\r\n0\r\n\r\n"),
            format!("{:x}\r\n{body}XX0\r\n\r\n", body.len()),
            format!("-5\r\n{body}\r\n0\r\n\r\n"),
            format!("ffffffffffffffffff\r\n{body}\r\n0\r\n\r\n"),
            format!("{:x}\r\n{body}\r\n", body.len() + 10),
        ];
        let head = format!(
            "POST /webhook HTTP/1.1\r\nHost: h\r\nX-Signature: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            sign(body.as_bytes())
        );
        // A chunk extension with a control character: parsers differ on whether to allow it.
        let (chunks, expect) = if self.rng.chance(15) {
            (
                format!("{:x};ext=\u{1}\r\n{body}\r\n0\r\n\r\n", body.len()),
                Expect::EitherWay(id),
            )
        } else {
            (self.rng.pick(&broken).clone(), Expect::Refused)
        };
        Probe {
            kind: Kind::BrokenChunking,
            wire: Wire::Raw(format!("{head}{chunks}").into_bytes()),
            expect,
        }
    }

    fn broken_query(&mut self) -> Probe {
        let broken = [
            "",
            "abc",
            "-1",
            "0",
            "101",
            "1e3",
            "1.0",
            "99999999999999999999999",
            "%00",
            "%FF%FE",
            "%",
            "%zz",
            "+",
            "%20",
            "１２",
            "٣",
            "0x10",
            "9223372036854775808",
            "-0",
            "1;2",
            "[1]",
            "{}",
            "null",
            "2025-02-30T00:00:00Z",
            "2025-01-15T10:00:00+05:30",
            "2025-01-15",
            "AAAA",
            "!!!",
            "%2B91",
            " 91",
            "+919876543210",
            "%E2%80%AE",
            "%C0%AF",
            "a%00b",
        ];
        let names = [
            "limit", "offset", "from", "since", "q", "cursor", "unknown", "limit[]", "", "%00",
        ];
        let mut params = Vec::new();
        for _ in 0..self.rng.between(1..6) {
            let name = *self.rng.pick(&names);
            let value = *self.rng.pick(&broken);
            params.push(format!("{name}={value}"));
        }
        if self.rng.chance(10) {
            params.push(format!(
                "q={}",
                "%41".repeat(self.rng.between(1..20_000) as usize)
            ));
        }
        if self.rng.chance(5) {
            params.push("&&&==&=".into());
        }
        let path = *self
            .rng
            .pick(&["/messages", "/messages", "/messages", "/stats", "/health/ready"]);
        Probe {
            kind: Kind::BrokenQuery,
            wire: Wire::Http {
                method: "GET",
                path: format!("{path}?{}", params.join("&")),
                headers: Vec::new(),
                body: Vec::new(),
            },
            expect: Expect::Read,
        }
    }

    fn signature_garbage(&mut self) -> Probe {
        let id = self.id("sig");
        let body = valid_message(&id).to_string().into_bytes();
        let header = *self.rng.pick(&["x-signature", "x-hub-signature-256"]);
        // What a right value would be, and the same with the other scheme's framing.
        let hex = sign(&body);
        let (prefix, other_framing) = if header == "x-signature" {
            ("", format!("sha256={hex}"))
        } else {
            ("sha256=", hex.clone())
        };
        let refused: Vec<Vec<u8>> = vec![
            Vec::new(),
            b" ".to_vec(),
            prefix.as_bytes().to_vec(),
            other_framing.into_bytes(),
            format!("{prefix}g{}", &hex[1..]).into_bytes(),
            format!("{prefix}{}", &hex[..63]).into_bytes(),
            format!("{prefix}{hex}{hex}").into_bytes(),
            format!("{prefix}{} {}", &hex[..32], &hex[32..]).into_bytes(),
            (0..self.rng.between(1..200))
                .map(|_| 0x80 + (self.rng.next_u64() % 0x7f) as u8)
                .collect(),
            "é".repeat(40).into_bytes(),
            "a".repeat(8_000).into_bytes(),
        ];
        // Spaces around a right signature are not part of the header's value in HTTP: either
        // reading is acceptable, as long as the answer matches what is stored.
        let (value, expect) = if self.rng.chance(5) {
            (format!(" {prefix}{hex} ").into_bytes(), Expect::EitherWay(id))
        } else {
            (self.rng.pick(&refused).clone(), Expect::Refused)
        };
        Probe {
            kind: Kind::SignatureGarbage,
            wire: Wire::Http {
                method: "POST",
                path: "/webhook".into(),
                headers: vec![(header.into(), value)],
                body,
            },
            expect,
        }
    }

    fn standard_webhooks_garbage(&mut self) -> Probe {
        let id = self.id("no");
        let body = valid_message(&id).to_string().into_bytes();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let good = signer::standard_webhooks(SECRET, "msg", now, &body).expect("sign");
        let many = (0..1_000)
            .map(|_| "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .collect::<Vec<_>>()
            .join(" ");
        let (timestamp, signature) = match self.rng.between(0..7) {
            0 => (now.to_string(), many),
            1 => ("99999999999999999999".to_owned(), good),
            2 => ("-1".to_owned(), good),
            3 => (
                (now - 3_600).to_string(),
                signer::standard_webhooks(SECRET, "msg", now - 3_600, &body).expect("sign"),
            ),
            4 => (format!("{now}.5"), good),
            5 => (now.to_string(), good.replace("v1,", "v1,,")),
            _ => (now.to_string(), "v1".to_owned()),
        };
        Probe {
            kind: Kind::StandardWebhooksGarbage,
            wire: Wire::Http {
                method: "POST",
                path: "/webhook".into(),
                headers: vec![
                    ("webhook-id".into(), b"msg".to_vec()),
                    ("webhook-timestamp".into(), timestamp.into_bytes()),
                    ("webhook-signature".into(), signature.into_bytes()),
                ],
                body,
            },
            expect: Expect::Refused,
        }
    }

    fn bad_routes(&mut self) -> Probe {
        let method = *self
            .rng
            .pick(&["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]);
        let long = format!("/{}", "a".repeat(self.rng.between(1..30_000) as usize));
        let paths = [
            "/webhook/",
            "/webhook/../stats",
            "/%2e%2e/%2e%2e/etc/passwd",
            "//webhook",
            "/WEBHOOK",
            "/messages/../../",
            "/stats%00",
            "/health",
            "/%C3%A9t%C3%A9",
            "/messages/%FF",
            "/webhook?x=1",
            "/stats/",
            "*",
            long.as_str(),
        ];
        let path = *self.rng.pick(&paths);
        // Written raw, so that no client tidies the path (`..`, `%2e`) before the server sees it.
        // A known route with a method it does not take is 405; anything else 404.
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        Probe {
            kind: Kind::BadRoutes,
            wire: Wire::Raw(raw.into_bytes()),
            expect: Expect::Refused,
        }
    }

    fn protocol_garbage(&mut self) -> Probe {
        let random: Vec<u8> = (0..self.rng.between(1..300))
            .map(|_| self.rng.next_u64() as u8)
            .collect();
        let choices: Vec<Vec<u8>> = vec![
            random,
            b"GET /health/live HTTP/9.9\r\n\r\n".to_vec(),
            b"GET /health/live\r\n\r\n".to_vec(),
            b"GET /health/live HTTP/1.1\r\nHost h\r\n\r\n".to_vec(),
            b"GET /health/live HTTP/1.1\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            b"GET /health/live HTTP/1.1\r\nX A: b\r\n\r\n".to_vec(),
            b"GET /health/live HTTP/1.1\r\n\r".to_vec(),
            b"\r\n\r\n\r\n".to_vec(),
            b"POST /webhook HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n".to_vec(),
            b"POST /webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n".to_vec(),
            b"POST /webhook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(),
            format!(
                "GET /health/live HTTP/1.1\r\n{}\r\n\r\n",
                "X-Many: a\r\n".repeat(200)
            )
            .into_bytes(),
            format!(
                "GET /health/live HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "b".repeat(500_000)
            )
            .into_bytes(),
            b"GET /health/live HTTP/1.1\r\nHost: h\r\n".to_vec(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00garbage".to_vec(),
        ];
        Probe {
            kind: Kind::ProtocolGarbage,
            wire: Wire::Raw(self.rng.pick(&choices).clone()),
            expect: Expect::Refused,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending and judging
// ---------------------------------------------------------------------------------------------

/// What came back.
#[derive(Debug)]
enum Answer {
    /// An answer with a body (the application's, which must be JSON).
    Full { status: u16, body: Vec<u8> },
    /// A status line with no body: HTTP-level refusals by hyper.
    Bare { status: u16 },
    /// The server closed the connection without answering.
    Closed,
}

async fn send(client: &reqwest::Client, base: &str, address: &str, wire: &Wire) -> Answer {
    match wire {
        Wire::Http {
            method,
            path,
            headers,
            body,
        } => {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = client.request(method, format!("{base}{path}")).body(body.clone());
            for (name, value) in headers {
                request = request.header(
                    name.as_str(),
                    reqwest::header::HeaderValue::from_bytes(value).expect("header"),
                );
            }
            let response = match request.send().await {
                Ok(response) => response,
                // A server that refuses an oversized body closes the connection while the client
                // is still sending it; the client may see that before the 413.
                Err(error) if !error.is_timeout() && body.len() > MAX_BODY => return Answer::Closed,
                Err(error) => panic!("{path} {headers:?} body {} bytes: {error:?}", body.len()),
            };
            let status = response.status().as_u16();
            let body = response.bytes().await.expect("body").to_vec();
            if body.is_empty() {
                Answer::Bare { status }
            } else {
                Answer::Full { status, body }
            }
        }
        Wire::Raw(bytes) => send_raw(address, bytes).await,
    }
}

/// Writes `bytes` on a fresh connection, then reads until the server closes it.
async fn send_raw(address: &str, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // The server may refuse and close before reading it all: a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received).await;
    parse_raw_answer(&received)
}

fn parse_raw_answer(received: &[u8]) -> Answer {
    let Some(head_end) = received.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Answer::Closed;
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status: u16 = head.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let rest = &received[head_end + 4..];
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    if body.is_empty() {
        Answer::Bare { status }
    } else {
        Answer::Full { status, body }
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < line_end + 2 + size {
            break;
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size..];
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
    body
}

/// Checks one answer against its probe; returns the status (0 for a closed connection) and the
/// ids of the messages the service took.
fn judge(probe: &Probe, answer: &Answer) -> (u16, Vec<String>) {
    let shown = |what: &str| format!("{:?} {what}: {answer:?}", probe.kind);
    let status = checked_status(probe, answer, &shown);
    let refusal = |status: u16| status == 0 || (400..500).contains(&status);
    match &probe.expect {
        Expect::Stored(id) => {
            assert_eq!(status, 200, "{}", shown("should be stored"));
            (status, vec![id.clone()])
        }
        Expect::StoredAll(ids) => {
            assert_eq!(status, 200, "{}", shown("should be stored"));
            (status, ids.clone())
        }
        Expect::Refused => {
            assert!(refusal(status), "{}", shown("should be refused"));
            (status, Vec::new())
        }
        Expect::Read => {
            assert!(status == 200 || status == 422, "{}", shown("a read"));
            (status, Vec::new())
        }
        Expect::EitherWay(id) => {
            assert!(status == 200 || refusal(status), "{}", shown("either way"));
            (
                status,
                if status == 200 {
                    vec![id.clone()]
                } else {
                    Vec::new()
                },
            )
        }
    }
}

/// The status of an answer whose form is right: JSON with a `detail` unless 200, or a bare
/// refusal of broken HTTP, or a closed connection where that is allowed. Never a 5xx.
fn checked_status(probe: &Probe, answer: &Answer, shown: &dyn Fn(&str) -> String) -> u16 {
    let status = match answer {
        Answer::Full { status: 200, body } if is_twilio(probe) => {
            assert_eq!(body.as_slice(), TWIML, "{}", shown("not the empty TwiML"));
            200
        }
        Answer::Full { status, body } => {
            let value: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
                panic!(
                    "{}",
                    shown(&format!("not JSON: {:?}", String::from_utf8_lossy(body)))
                )
            });
            if *status != 200 {
                assert!(value.get("detail").is_some(), "{}", shown("no detail"));
            }
            *status
        }
        Answer::Bare { status } => {
            // Only hyper's own refusals of broken HTTP (and HEAD answers) come without a body.
            let head = match &probe.wire {
                Wire::Http { method, .. } => *method == "HEAD",
                Wire::Raw(bytes) => bytes.starts_with(b"HEAD "),
            };
            assert!(
                head || matches!(probe.wire, Wire::Raw(_)) && [400, 408, 413, 414, 431].contains(status),
                "{}",
                shown("an answer without a JSON body")
            );
            *status
        }
        Answer::Closed => {
            let oversized = matches!(&probe.wire, Wire::Http { body, .. } if body.len() > MAX_BODY);
            assert!(
                oversized || matches!(probe.wire, Wire::Raw(_)),
                "{}",
                shown("closed without an answer")
            );
            0
        }
    };
    assert!(!(500..600).contains(&status), "{}", shown("a 5xx"));
    status
}

/// Twilio's answer to a message: empty TwiML, not JSON.
const TWIML: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

fn is_twilio(probe: &Probe) -> bool {
    matches!(&probe.wire, Wire::Http { path, .. } if path.starts_with("/webhook/twilio"))
}

/// Counts for the summary.
#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<String, usize>,
    by_status: BTreeMap<u16, usize>,
    stored: BTreeSet<String>,
}

fn request_count() -> usize {
    std::env::var("HARDENING_REQUESTS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(if long_run() { 40_000 } else { 4_000 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_json_answers_no_5xx_no_hang_flat_memory_and_store_nothing_wrong() {
    let total = request_count();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(dir.path().join("app.db"))
        .with_providers()
        .env("BODY_READ_TIMEOUT_MS", "1000")
        .env("HEADER_READ_TIMEOUT_MS", "1000")
        .env("LOG_LEVEL", "ERROR")
        .start()
        .await;
    // The service closes a keep-alive connection after 1 s without a request (its header
    // timeout, shortened here); the client lets go of idle connections well before, so that it
    // never sends a request on one that the service is closing.
    let client = webhook_inbox::outbound::client_builder()
        .timeout(REQUEST_BOUND)
        .pool_idle_timeout(Duration::from_millis(250))
        .build()
        .expect("client");
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut generator = Generator {
        rng: Rng::from_env("hostile"),
        next: 0,
        stored_so_far: Vec::new(),
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let warm_up = total / 4;
    let mut rss_after_warm_up = None;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..total {
        if index == warm_up {
            while tasks.join_next().await.is_some() {}
            rss_after_warm_up = vm_rss_kib(server.pid());
        }
        let probe = generator.probe();
        let permit = Arc::clone(&slots).acquire_owned().await.expect("semaphore");
        let (client, base, address, tally) = (
            client.clone(),
            server.base.clone(),
            address.clone(),
            Arc::clone(&tally),
        );
        tasks.spawn(async move {
            let answer = tokio::time::timeout(REQUEST_BOUND, send(&client, &base, &address, &probe.wire))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{:?}: no answer within {REQUEST_BOUND:?}: the service hangs",
                        probe.kind
                    )
                });
            let (status, stored) = judge(&probe, &answer);
            let mut tally = tally.lock().expect("tally");
            *tally.by_kind.entry(format!("{:?}", probe.kind)).or_default() += 1;
            *tally.by_status.entry(status).or_default() += 1;
            tally.stored.extend(stored);
            drop(permit);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a probe failed");
    }
    let rss_at_end = vm_rss_kib(server.pid());

    // Alive, and it never panicked nor answered 5xx by its own account.
    assert_eq!(server.get("/health/live").await.status(), 200);
    let stored: BTreeSet<String> = all_ids(&server).await.into_iter().collect();
    let tally = Arc::try_unwrap(tally)
        .ok()
        .expect("tally")
        .into_inner()
        .expect("tally");
    assert_eq!(
        stored, tally.stored,
        "stored messages differ from the ones that should be"
    );
    send_signal(server.pid(), "TERM");
    let (status, stdout) = server.wait_exit(SHUTDOWN_DEADLINE);
    assert!(status.success(), "{status}");
    let stderr = server.stderr();
    assert!(
        !stdout.contains("panicked") && !stderr.contains("panicked"),
        "a panic:\n{stderr}"
    );
    for line in json_lines(&stdout) {
        if let Some(status) = line["status"].as_u64() {
            assert!(status < 500, "the log has a {status}: {line}");
        }
    }

    eprintln!("hostile: {total} requests, {} messages stored", stored.len());
    eprintln!("hostile: requests by kind: {:?}", tally.by_kind);
    eprintln!(
        "hostile: answers by status (0 = closed without an answer): {:?}",
        tally.by_status
    );
    if let (Some(before), Some(after)) = (rss_after_warm_up, rss_at_end) {
        eprintln!("hostile: VmRSS {before} KiB after warm-up, {after} KiB at the end");
        assert!(
            after <= before + RSS_GROWTH_LIMIT_KIB,
            "memory grew from {before} KiB to {after} KiB"
        );
    }
}

/// A probe whose signature is wrong (so the body's shape does not matter).
fn probe_unsigned(probe: &Probe) -> bool {
    match &probe.wire {
        Wire::Http { headers, body, .. } => headers.iter().any(|(name, value)| {
            name == "x-hub-signature-256"
                && *value != signer::github(crate::providers::APP_SECRET, body).into_bytes()
        }),
        Wire::Raw(_) => false,
    }
}

#[test]
fn raw_answers_are_parsed() {
    let answer = parse_raw_answer(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 2\r\n\r\n{}");
    assert!(matches!(answer, Answer::Full { status: 408, .. }));
    let answer = parse_raw_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    assert!(matches!(answer, Answer::Bare { status: 400 }));
    assert!(matches!(parse_raw_answer(b""), Answer::Closed));
    assert_eq!(dechunk(b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"), b"abc");
}

#[test]
fn the_generator_makes_what_it_says() {
    let mut generator = Generator {
        rng: Rng::seeded(7),
        next: 0,
        stored_so_far: Vec::new(),
    };
    let mut kinds = BTreeSet::new();
    for _ in 0..2_000 {
        let probe = generator.probe();
        kinds.insert(probe.kind);
        match (&probe.expect, &probe.wire) {
            (Expect::Stored(id), Wire::Http { body, path, .. }) if path == "/webhook" => {
                let parsed =
                    webhook_inbox::message::parse_message(body).expect("a message meant to be stored parses");
                assert_eq!(&parsed.message_id, id);
            }
            (Expect::StoredAll(ids), Wire::Http { body, .. }) => {
                let notification = webhook_inbox::sources::whatsapp::normalize(body)
                    .expect("a batch meant to be stored parses");
                let found: Vec<&str> = notification
                    .messages
                    .iter()
                    .map(|new| new.message.message_id.as_str())
                    .collect();
                assert_eq!(found, *ids);
            }
            (Expect::Refused, Wire::Http { body, path, .. }) if path == "/webhook/whatsapp" => {
                assert!(webhook_inbox::sources::whatsapp::normalize(body).is_err() || probe_unsigned(&probe));
            }
            _ => {}
        }
    }
    assert_eq!(kinds.len(), Kind::WEIGHTS.len(), "every kind is drawn");
}

// ---------------------------------------------------------------------------------------------
// What the generator found, kept as plain tests on every backend
// ---------------------------------------------------------------------------------------------

/// A NUL in `q` made SQLite's FTS5 query fail ("unterminated string") and the service answer 503;
/// PostgreSQL refuses NUL in text parameters too. Such a query is now a 422, like such a body.
async fn a_nul_in_q_or_from_is_422_not_503(app: crate::common::TestApp) {
    app.store(&crate::common::message(
        "m1",
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some("abcdef"),
    ))
    .await;
    for (query, loc) in [
        ("q=a%00bcd", "q"),
        ("q=%00%00%00", "q"),
        ("q=%00", "q"),
        ("from=%2B91%00", "from"),
    ] {
        let (status, answer) = app.get_json(&format!("/messages?{query}")).await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["query", loc]),
            "{query}: {answer}"
        );
    }
    let (status, page) = app.get_json("/messages?q=bcd").await;
    assert_eq!((status.as_u16(), page["total"].clone()), (200, json!(1)));
}

conformance!(a_nul_in_q_or_from_is_422_not_503);
