//! Properties with many cases (issue 5, point 2) on the two parsers that read what an attacker
//! sends before anything else: the signature verifier (every scheme, any header bytes) and the
//! payload validator (mutated and hostile bodies).
//!
//! 1 000 cases per property by default, 50 000 with `HARDENING_LONG=1`; `PROPTEST_CASES=N` sets
//! any number.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use webhook_inbox::message::{MAX_MESSAGE_ID_CHARS, MAX_TEXT_CHARS, Timestamp, parse_message};
use webhook_inbox::signature::{
    DEFAULT_TOLERANCE, GITHUB_HEADER, SIGNATURE_HEADER, STANDARD_ID_HEADER, STANDARD_SIGNATURE_HEADER,
    STANDARD_TIMESTAMP_HEADER, SVIX_ID_HEADER, SVIX_SIGNATURE_HEADER, SVIX_TIMESTAMP_HEADER, Scheme,
    SignatureError, SigningKey, Verifier, signer,
};

fn config() -> ProptestConfig {
    let default = if std::env::var("HARDENING_LONG").is_ok_and(|value| !value.is_empty() && value != "0") {
        50_000
    } else {
        1_000
    };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

const NOW: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// A secret as an operator writes it: plain text, or `whsec_` and the base64 of random bytes.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]{1,64}".prop_filter("not a whsec_ prefix", |secret| !secret.starts_with("whsec_")),
        vec(any::<u8>(), 1..64).prop_map(|bytes| format!("whsec_{}", STANDARD.encode(bytes))),
    ]
}

/// A `webhook-id` as senders make them: visible ASCII.
fn message_id() -> impl Strategy<Value = String> {
    "[!-~]{1,40}"
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..512)
}

/// Bytes a header value may hold (visible ASCII, space, tab and obs-text).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
        2 => prop::sample::select(b"v1, =+/0123456789abcdefsha".to_vec()),
    ];
    vec(byte, 0..160)
}

fn standard_headers(id: &[u8], timestamp: &[u8], signature: &[u8]) -> HeaderMap {
    standard_headers_as(false, id, timestamp, signature)
}

/// The three Standard Webhooks headers under their own names or, with `svix`, under Svix's.
fn standard_headers_as(svix: bool, id: &[u8], timestamp: &[u8], signature: &[u8]) -> HeaderMap {
    let names = if svix {
        [SVIX_ID_HEADER, SVIX_TIMESTAMP_HEADER, SVIX_SIGNATURE_HEADER]
    } else {
        [
            STANDARD_ID_HEADER,
            STANDARD_TIMESTAMP_HEADER,
            STANDARD_SIGNATURE_HEADER,
        ]
    };
    let mut headers = HeaderMap::new();
    for (name, value) in names.into_iter().zip([id, timestamp, signature]) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

fn verifier(current: &str, previous: &[String]) -> Verifier {
    let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
    Verifier::new(current, &previous, DEFAULT_TOLERANCE).expect("usable secrets")
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the three Standard Webhooks headers hold (under either family of names), the
    /// verifier answers without panicking, and it accepts only when one entry is the right MAC for
    /// a timestamp inside the window.
    #[test]
    fn standard_webhooks_headers_of_any_bytes_are_judged_and_only_the_right_mac_passes(
        svix in any::<bool>(),
        secret in secret(),
        id in header_bytes(),
        timestamp in prop_oneof![header_bytes(), (0u64..u64::MAX).prop_map(|n| n.to_string().into_bytes())],
        signature in header_bytes(),
        body in body(),
    ) {
        let verifier = verifier(&secret, &[]);
        let headers = standard_headers_as(svix, &id, &timestamp, &signature);
        let verdict = verifier.verify(&headers, &body, NOW);
        if verdict.is_ok() {
            // Only possible if the bytes happen to be a right signature: check it independently.
            let id = String::from_utf8(id).expect("an accepted id is text");
            let timestamp: u64 = std::str::from_utf8(&timestamp).expect("digits").parse().expect("digits");
            let right = signer::standard_webhooks(&secret, &id, timestamp, &body).expect("sign");
            prop_assert!(String::from_utf8_lossy(&signature).split(' ').any(|entry| entry == right));
        }
    }

    /// A message signed by the sender's rules verifies, under either family of names; any change
    /// to the id, the timestamp, the body or one character of the signature breaks it.
    #[test]
    fn standard_webhooks_signatures_verify_and_any_change_breaks_them(
        svix in any::<bool>(),
        secret in secret(),
        id in message_id(),
        skew in -300i64..=300,
        body in body(),
        junk in vec("v1,[A-Za-z0-9+/]{43}=|v1a,[A-Za-z0-9+/]{10}|[!-~]{0,20}", 0..4),
        place in any::<Index>(),
        change in 0usize..4,
        at in any::<Index>(),
    ) {
        let verifier = verifier(&secret, &[]);
        let timestamp = NOW.saturating_add_signed(skew);
        let right = signer::standard_webhooks(&secret, &id, timestamp, &body).expect("sign");
        let mut entries = junk.clone();
        entries.insert(place.index(junk.len() + 1), right.clone());
        let list = entries.join(" ");
        let headers = standard_headers_as(svix, id.as_bytes(), timestamp.to_string().as_bytes(), list.as_bytes());
        let scheme = if svix { Scheme::Svix } else { Scheme::StandardWebhooks };
        prop_assert_eq!(verifier.verify(&headers, &body, NOW), Ok(scheme));

        let (id2, timestamp2, mut body2, mut signature2) = (id.clone(), timestamp, body.clone(), right.clone().into_bytes());
        let (id2, timestamp2) = match change {
            0 => (format!("{id2}x"), timestamp2),
            1 => (id2, timestamp2 + 1),
            2 => {
                if body2.is_empty() { body2.push(b'x') } else { let i = at.index(body2.len()); body2[i] ^= 1; }
                (id2, timestamp2)
            }
            _ => {
                // One base64 character of the MAC (not the `v1,`), changed to another.
                let i = 3 + at.index(signature2.len() - 4);
                signature2[i] = if signature2[i] == b'A' { b'B' } else { b'A' };
                (id2, timestamp2)
            }
        };
        let tampered = standard_headers_as(svix, id2.as_bytes(), timestamp2.to_string().as_bytes(), &signature2);
        let verdict = verifier.verify(&tampered, &body2, NOW);
        prop_assert!(verdict.is_err(), "change {} accepted", change);
    }

    /// Outside the window the right signature is refused as stale, either way.
    #[test]
    fn timestamps_outside_the_window_are_stale(
        secret in secret(),
        id in message_id(),
        distance in 301u64..10_000_000,
        future in any::<bool>(),
        body in body(),
    ) {
        let timestamp = if future { NOW + distance } else { NOW - distance };
        let right = signer::standard_webhooks(&secret, &id, timestamp, &body).expect("sign");
        let headers = standard_headers(id.as_bytes(), timestamp.to_string().as_bytes(), right.as_bytes());
        let refusal = verifier(&secret, &[]).verify(&headers, &body, NOW).expect_err("stale");
        prop_assert_eq!(refusal.error, SignatureError::StaleTimestamp);
    }

    /// GitHub's and the original header: any bytes are judged without panicking; the right value
    /// passes in either hex case; nothing else does.
    #[test]
    fn body_signature_headers_of_any_bytes_only_pass_when_right(
        secret in secret(),
        body in body(),
        value in header_bytes(),
        github in any::<bool>(),
        upper in any::<bool>(),
    ) {
        let verifier = verifier(&secret, &[]);
        let name = if github { GITHUB_HEADER } else { SIGNATURE_HEADER };
        let hex = SigningKey::new(secret.as_bytes()).sign(&body);
        let hex = if upper { hex.to_ascii_uppercase() } else { hex };
        let right = if github { format!("sha256={hex}") } else { hex };
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&right).expect("ASCII"));
        prop_assert!(verifier.verify(&headers, &body, NOW).is_ok());
        if let Ok(garbage) = HeaderValue::from_bytes(&value) {
            let matches = value.eq_ignore_ascii_case(right.as_bytes())
                && value.starts_with(if github { b"sha256=" } else { b"" });
            headers.insert(HeaderName::from_static(name), garbage);
            prop_assert_eq!(verifier.verify(&headers, &body, NOW).is_ok(), matches);
        }
    }

    /// With previous secrets, a signature by any accepted secret passes in every scheme, and one
    /// by a secret not on the list does not.
    #[test]
    fn every_accepted_secret_and_no_other_verifies(
        secrets in vec(secret(), 1..5).prop_filter("distinct", |secrets| {
            let mut sorted = secrets.clone();
            sorted.sort();
            sorted.dedup();
            sorted.len() == secrets.len()
        }),
        stranger in secret(),
        which in any::<Index>(),
        body in body(),
    ) {
        prop_assume!(!secrets.contains(&stranger));
        let verifier = verifier(&secrets[0], &secrets[1..]);
        let signer_secret = &secrets[which.index(secrets.len())];
        for (secret, expected) in [(signer_secret, true), (&stranger, false)] {
            let x = SigningKey::new(secret.as_bytes()).sign(&body);
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), HeaderValue::from_str(&x).expect("hex"));
            prop_assert_eq!(verifier.verify(&headers, &body, NOW).is_ok(), expected);
            let standard = signer::standard_webhooks(secret, "msg", NOW, &body).expect("sign");
            let headers = standard_headers(b"msg", NOW.to_string().as_bytes(), standard.as_bytes());
            prop_assert_eq!(verifier.verify(&headers, &body, NOW).is_ok(), expected);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The payload validator
// ---------------------------------------------------------------------------------------------

fn valid_body() -> Vec<u8> {
    json!({ "message_id": "m1", "from": "+919876543210", "to": "+14155550100", "ts": "2025-01-15T10:00:00Z", "text": "Hello" })
        .to_string()
        .into_bytes()
}

/// Pieces an attacker splices into a body.
fn hostile_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\xc0\xaf".to_vec()),
        Just(b"\xed\xa0\x80".to_vec()),
        Just(b"\xf4\x90\x80\x80".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"\x00".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just(b"\\ud800".to_vec()),
        Just(b"1e999999".to_vec()),
        Just(b"-0".to_vec()),
        Just("9".repeat(400).into_bytes()),
        (1usize..300).prop_map(|depth| "[".repeat(depth).into_bytes()),
        (1usize..300).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        Just("\u{96f}\u{967}".as_bytes().to_vec()),
        Just("\u{ff19}".as_bytes().to_vec()),
        Just(b"\"".to_vec()),
        Just(b",\"message_id\":\"again\"".to_vec()),
        Just(b"}".to_vec()),
        Just(b"{".to_vec()),
        vec(any::<u8>(), 1..8),
    ]
}

/// What a valid message must be, checked without the service's code.
fn satisfies_every_rule(body: &[u8]) -> bool {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let text_of = |name: &str| fields.get(name).and_then(Value::as_str);
    let msisdn = |value: Option<&str>| {
        value.is_some_and(|v| v.len() > 1 && v.starts_with('+') && v[1..].bytes().all(|b| b.is_ascii_digit()))
    };
    let id_ok = text_of("message_id")
        .is_some_and(|id| (1..=MAX_MESSAGE_ID_CHARS).contains(&id.chars().count()) && !id.contains('\0'));
    let text_ok = match fields.get("text") {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.chars().count() <= MAX_TEXT_CHARS && !text.contains('\0'),
        Some(_) => false,
    };
    let ts_ok = text_of("ts").is_some_and(|ts| Timestamp::parse(ts).is_some());
    id_ok && msisdn(text_of("from")) && msisdn(text_of("to")) && ts_ok && text_ok
}

proptest! {
    #![proptest_config(config())]

    /// A valid body with hostile pieces spliced in, or bytes flipped: the validator never panics,
    /// every error points into the body, and it accepts exactly when every rule holds.
    #[test]
    fn mutated_bodies_are_accepted_exactly_when_every_rule_holds(
        pieces in vec((any::<Index>(), hostile_piece()), 0..4),
        flips in vec((any::<Index>(), any::<u8>()), 0..3),
        cut in prop::option::of(any::<Index>()),
    ) {
        let mut body = valid_body();
        for (at, piece) in &pieces {
            let at = at.index(body.len() + 1);
            body.splice(at..at, piece.iter().copied());
        }
        for (at, byte) in &flips {
            let at = at.index(body.len());
            body[at] = *byte;
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        match parse_message(&body) {
            Ok(message) => {
                prop_assert!(satisfies_every_rule(&body), "accepted {:?}", String::from_utf8_lossy(&body));
                prop_assert!(!message.message_id.is_empty());
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(!satisfies_every_rule(&body), "refused {:?}: {:?}", String::from_utf8_lossy(&body), errors);
                for error in errors {
                    prop_assert_eq!(error.loc.first().and_then(|part| part.as_name()), Some("body"));
                }
            }
        }
    }
}
