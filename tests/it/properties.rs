//! Properties of the pure parts of `POST /webhook`: signatures, message validation and timestamps.
//!
//! Each property runs 256 cases by default; `PROPTEST_CASES=N` changes that.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use axum::http::{HeaderMap, HeaderValue};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use webhook_inbox::message::{MAX_MESSAGE_ID_CHARS, MAX_TEXT_CHARS, Timestamp, parse_message};
use webhook_inbox::signature::{SignatureError, SigningKey};

/// 256 cases unless `PROPTEST_CASES` asks for another number.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

fn secret() -> impl Strategy<Value = Vec<u8>> {
    // Past 64 bytes HMAC hashes the key first: both regimes are covered.
    vec(any::<u8>(), 0..160)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..1024), ".{0,200}".prop_map(String::into_bytes),]
}

fn hex_digit(value: u8, upper: bool) -> u8 {
    let digit = b"0123456789abcdef"[usize::from(value)];
    if upper { digit.to_ascii_uppercase() } else { digit }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => panic!("not a hex digit: {digit}"),
    }
}

/// Ways to turn the true signature into some other header value.
#[derive(Debug, Clone)]
enum Mutation {
    Keep,
    Uppercase,
    MixedCase(Vec<bool>),
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Anything(Vec<u8>),
    AnyText(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"0123456789abcdefABCDEF \t=,;xX-".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        Just(Mutation::Keep),
        Just(Mutation::Uppercase),
        vec(any::<bool>(), 64).prop_map(Mutation::MixedCase),
        (any::<Index>(), byte.clone()).prop_map(|(at, with)| Mutation::Replace(at, with)),
        (any::<Index>(), byte.clone()).prop_map(|(at, with)| Mutation::Insert(at, with)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        vec(byte.clone(), 1..8).prop_map(Mutation::Prefix),
        vec(byte, 1..8).prop_map(Mutation::Suffix),
        vec(any::<u8>(), 0..130).prop_map(Mutation::Anything),
        ".{0,70}".prop_map(Mutation::AnyText),
    ]
}

fn apply(mutation: &Mutation, signature: &str) -> Vec<u8> {
    let mut bytes = signature.as_bytes().to_vec();
    match mutation {
        Mutation::Keep => {}
        Mutation::Uppercase => bytes.make_ascii_uppercase(),
        Mutation::MixedCase(upper) => {
            for (byte, &upper) in bytes.iter_mut().zip(upper) {
                if upper {
                    byte.make_ascii_uppercase();
                }
            }
        }
        Mutation::Replace(at, with) => {
            let at = at.index(bytes.len());
            bytes[at] = *with;
        }
        Mutation::Insert(at, with) => bytes.insert(at.index(bytes.len() + 1), *with),
        Mutation::Delete(at) => {
            bytes.remove(at.index(bytes.len()));
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Prefix(prefix) => bytes.splice(0..0, prefix.iter().copied()).for_each(drop),
        Mutation::Suffix(suffix) => bytes.extend_from_slice(suffix),
        Mutation::Anything(anything) => bytes.clone_from(anything),
        Mutation::AnyText(text) => bytes = text.clone().into_bytes(),
    }
    bytes
}

/// One change to what a signature covers or is made with; any of them must break it.
#[derive(Debug, Clone)]
enum Change {
    /// Flip bit `bit` of the body's byte at `at`.
    BodyBit { at: Index, bit: u8 },
    /// Replace the hex digit at `at` with another, in upper or lower case.
    HexDigit { at: Index, replacement: u8, upper: bool },
    /// Flip bit `bit` of the secret's byte at `at`.
    SecretBit { at: Index, bit: u8 },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Change::BodyBit { at, bit }),
        (any::<Index>(), 0u8..16, any::<bool>()).prop_map(|(at, replacement, upper)| Change::HexDigit {
            at,
            replacement,
            upper
        }),
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Change::SecretBit { at, bit }),
    ]
}

impl Change {
    /// The secret, signature and body after the change.
    fn apply(
        &self,
        mut secret: Vec<u8>,
        mut signature: Vec<u8>,
        mut body: Vec<u8>,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        match *self {
            Change::BodyBit { at, bit } => {
                let at = at.index(body.len());
                body[at] ^= 1 << bit;
            }
            Change::SecretBit { at, bit } => {
                let at = at.index(secret.len());
                secret[at] ^= 1 << bit;
            }
            Change::HexDigit {
                at,
                replacement,
                upper,
            } => {
                if upper {
                    signature.make_ascii_uppercase();
                }
                let at = at.index(signature.len());
                let original = hex_value(signature[at]);
                let replacement = if replacement == original {
                    (replacement + 1) % 16
                } else {
                    replacement
                };
                signature[at] = hex_digit(replacement, upper);
            }
        }
        (secret, signature, body)
    }
}

/// `Some(true)` for the signature in lower or upper case, `Some(false)` for anything that is not
/// the signature in any case; `None` (no claim) for a mixed-case spelling.
fn should_pass(header: &[u8], signature: &str) -> Option<bool> {
    if header == signature.as_bytes() || header == signature.to_ascii_uppercase().as_bytes() {
        Some(true)
    } else if header.eq_ignore_ascii_case(signature.as_bytes()) {
        None
    } else {
        Some(false)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_signature_is_64_lowercase_hex_digits_and_verifies_in_either_case(
        secret in secret(),
        body in body(),
    ) {
        let key = SigningKey::new(&secret);
        let signature = key.sign(&body);
        prop_assert_eq!(signature.len(), 64);
        prop_assert!(signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{}", signature);
        prop_assert_eq!(key.verify_hex(signature.as_bytes(), &body), Ok(()));
        prop_assert_eq!(key.verify_hex(signature.to_ascii_uppercase().as_bytes(), &body), Ok(()));
        // Signing keeps no state between calls, and a key made again from the secret agrees.
        prop_assert_eq!(key.sign(&body), signature.clone());
        prop_assert_eq!(SigningKey::new(&secret).sign(&body), signature);
    }

    #[test]
    fn any_one_change_to_body_signature_or_secret_breaks_the_signature(
        secret in vec(any::<u8>(), 1..160),
        body in vec(any::<u8>(), 1..1024),
        change in change(),
    ) {
        let signature = SigningKey::new(&secret).sign(&body);
        let (secret, signature, body) = change.apply(secret, signature.into_bytes(), body);
        let key = SigningKey::new(&secret);
        prop_assert_eq!(key.verify_hex(&signature, &body), Err(SignatureError::NoMatch), "{:?}", change);
    }

    #[test]
    fn any_header_value_is_judged_without_panicking_and_only_the_signature_passes(
        secret in secret(),
        body in body(),
        mutation in mutation(),
    ) {
        let key = SigningKey::new(&secret);
        let signature = key.sign(&body);
        let header = apply(&mutation, &signature);
        let verdict = key.verify_hex(&header, &body);
        if let Some(expected) = should_pass(&header, &signature) {
            prop_assert_eq!(verdict.is_ok(), expected, "header {:?}", String::from_utf8_lossy(&header));
        }
        // Through a header map as the service sees it (when the bytes can be a header value).
        if let Ok(value) = HeaderValue::from_bytes(&header) {
            let mut headers = HeaderMap::new();
            headers.insert("x-signature", value);
            let verdict = key.verify_headers(&headers, &body);
            if let Some(expected) = should_pass(&header, &signature) {
                prop_assert_eq!(verdict.is_ok(), expected, "header {:?}", String::from_utf8_lossy(&header));
            }
        }
        prop_assert_eq!(key.verify_headers(&HeaderMap::new(), &body), Err(SignatureError::Missing));
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in(year: u32, month: u32) -> u32 {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if month == 2 && is_leap(year) {
        29
    } else {
        DAYS[(month - 1) as usize]
    }
}

/// A valid timestamp's parts; `fraction` holds the digits after the dot, if any.
#[derive(Debug, Clone)]
struct Parts {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    fraction: Option<String>,
}

impl Parts {
    fn text(&self) -> String {
        let mut text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if let Some(fraction) = &self.fraction {
            text.push('.');
            text.push_str(fraction);
        }
        text.push('Z');
        text
    }

    /// The instant, as a tuple that orders chronologically.
    fn instant(&self) -> (u32, u32, u32, u32, u32, u32, u32) {
        let nanos = self.fraction.as_deref().map_or(0, |digits| {
            format!("{digits:0<9}").parse::<u32>().expect("nine digits")
        });
        (
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            nanos,
        )
    }
}

/// Years that catch leap-year mistakes (centuries, multiples of 400, the range's ends) more often
/// than a uniform pick would.
fn tricky_year(range: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = u32> {
    let (low, high) = (*range.start(), *range.end());
    prop_oneof![
        2 => range,
        1 => (0u32..=99).prop_map(|century| century * 100),
        1 => prop::sample::select(vec![0, 1, 4, 100, 400, 1900, 2000, 2023, 2024, 2100, 9996, 9999]),
    ]
    .prop_filter("in range", move |year| (low..=high).contains(year))
}

/// Any valid timestamp, years 0001 to 9999.
fn valid_parts() -> impl Strategy<Value = Parts> {
    let month = prop_oneof![3 => 1u32..=12, 1 => Just(2u32)];
    (tricky_year(1..=9999), month)
        .prop_flat_map(|(year, month)| {
            let last = days_in(year, month);
            (
                Just(year),
                Just(month),
                prop_oneof![1..=last, (last - 1)..=last],
                0u32..=23,
                0u32..=59,
                0u32..=59,
                option::of("[0-9]{1,9}"),
            )
        })
        .prop_map(|(year, month, day, hour, minute, second, fraction)| Parts {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction,
        })
}

/// Valid timestamps crowded around a few boundaries (a leap day, a year's end), with fractions
/// that often name the same instant in different spellings (`.5`, `.50`, `.500000000`, none and
/// `.0`).
fn close_parts() -> impl Strategy<Value = Parts> {
    const ANCHORS: [(u32, u32, u32, u32, u32, u32); 6] = [
        (2023, 12, 31, 23, 59, 59),
        (2024, 1, 1, 0, 0, 0),
        (2024, 2, 29, 23, 59, 59),
        (2024, 3, 1, 0, 0, 0),
        (2024, 3, 1, 0, 0, 1),
        (2024, 3, 1, 0, 1, 0),
    ];
    let fraction = option::of(prop_oneof!["[05]0{0,8}", "[0-9]{1,2}", "9{9}", "0{1,9}"]);
    (prop::sample::select(ANCHORS.to_vec()), fraction).prop_map(
        |((year, month, day, hour, minute, second), fraction)| Parts {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction,
        },
    )
}

fn some_parts() -> impl Strategy<Value = Parts> {
    prop_oneof![valid_parts(), close_parts()]
}

/// An independent judge of the `ts` rule.
fn oracle_accepts(text: &str) -> bool {
    fn number(part: &str, width: usize) -> Option<u32> {
        (part.len() == width && part.bytes().all(|b| b.is_ascii_digit())).then(|| part.parse().unwrap())
    }
    let Some(body) = text.strip_suffix('Z') else {
        return false;
    };
    let Some((date, time)) = body.split_once('T') else {
        return false;
    };
    let date: Vec<&str> = date.split('-').collect();
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let clock: Vec<&str> = clock.split(':').collect();
    if date.len() != 3 || clock.len() != 3 {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (number(date[0], 4), number(date[1], 2), number(date[2], 2))
    else {
        return false;
    };
    let (Some(hour), Some(minute), Some(second)) =
        (number(clock[0], 2), number(clock[1], 2), number(clock[2], 2))
    else {
        return false;
    };
    let fraction_ok = fraction
        .is_none_or(|digits| (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()));
    fraction_ok
        && year >= 1
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 59
}

/// Timestamp-shaped text with every component possibly out of range.
fn raw_timestamp() -> impl Strategy<Value = String> {
    (
        tricky_year(0..=9999),
        prop_oneof![0u32..=13, Just(2u32)],
        prop_oneof![0u32..=32, 28u32..=31],
        0u32..=25,
        0u32..=61,
        0u32..=61,
        option::of("[0-9]{0,10}"),
    )
        .prop_map(|(year, month, day, hour, minute, second, fraction)| {
            let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            if let Some(fraction) = fraction {
                text.push('.');
                text.push_str(&fraction);
            }
            text.push('Z');
            text
        })
}

/// A valid timestamp with one character replaced, inserted or removed.
fn near_miss_timestamp() -> impl Strategy<Value = String> {
    let replacement = prop_oneof![
        4 => prop::sample::select("0123456789-T:.Zz+ t".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ];
    (valid_parts(), any::<Index>(), replacement, 0..3u8).prop_map(|(parts, at, with, how)| {
        let mut chars: Vec<char> = parts.text().chars().collect();
        match how {
            0 => {
                let at = at.index(chars.len());
                chars[at] = with;
            }
            1 => chars.insert(at.index(chars.len() + 1), with),
            _ => {
                chars.remove(at.index(chars.len()));
            }
        }
        chars.into_iter().collect()
    })
}

fn timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        some_parts().prop_map(|parts| parts.text()),
        raw_timestamp(),
        near_miss_timestamp(),
        ".{0,32}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_valid_timestamp_is_accepted_verbatim(parts in some_parts()) {
        let text = parts.text();
        let parsed = Timestamp::parse(&text);
        prop_assert!(parsed.is_some(), "{} rejected", text);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.as_str(), text.as_str());
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn timestamps_are_accepted_exactly_when_valid(text in timestamp_text()) {
        prop_assert_eq!(
            Timestamp::parse(&text).is_some(),
            oracle_accepts(&text),
            "{:?}", text
        );
    }

    #[test]
    fn sort_keys_order_timestamps_as_instants(a in some_parts(), b in some_parts()) {
        let (ta, tb) = (Timestamp::parse(&a.text()).unwrap(), Timestamp::parse(&b.text()).unwrap());
        let by_key = ta.sort_key().cmp(tb.sort_key());
        let by_instant = a.instant().cmp(&b.instant());
        prop_assert_eq!(by_key, by_instant, "{} vs {}: keys {} and {}", a.text(), b.text(), ta.sort_key(), tb.sort_key());
        if by_instant == Ordering::Equal {
            prop_assert_eq!(ta.sort_key(), tb.sort_key());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

fn chars_without_nul(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    // A mapping, not a filter: thousands of characters per case would exhaust proptest's rejects.
    let not_nul = any::<char>().prop_map(|c| if c == '\0' { '\u{1}' } else { c });
    vec(not_nul, range).prop_map(String::from_iter)
}

fn msisdn() -> impl Strategy<Value = String> {
    "\\+[0-9]{1,20}"
}

/// The field values of a valid message.
#[derive(Debug, Clone)]
struct Valid {
    message_id: String,
    from: String,
    to: String,
    ts: Parts,
    text: Option<String>,
    /// `text: null` written out rather than left absent.
    explicit_null: bool,
    /// An unknown field the service must ignore.
    extra: Option<(String, Value)>,
}

impl Valid {
    fn object(&self) -> Map<String, Value> {
        let mut object = Map::new();
        if let Some((name, value)) = &self.extra {
            object.insert(name.clone(), value.clone());
        }
        object.insert("message_id".into(), json!(self.message_id));
        object.insert("from".into(), json!(self.from));
        object.insert("to".into(), json!(self.to));
        object.insert("ts".into(), json!(self.ts.text()));
        match &self.text {
            Some(text) => {
                object.insert("text".into(), json!(text));
            }
            None if self.explicit_null => {
                object.insert("text".into(), Value::Null);
            }
            None => {}
        }
        object
    }
}

fn valid_message() -> impl Strategy<Value = Valid> {
    let extra_name = "[a-z_]{1,12}".prop_filter("not a known field", |name| {
        !["message_id", "from", "to", "ts", "text"].contains(&name.as_str())
    });
    (
        chars_without_nul(1..=MAX_MESSAGE_ID_CHARS),
        msisdn(),
        msisdn(),
        valid_parts(),
        option::of(chars_without_nul(0..=MAX_TEXT_CHARS)),
        any::<bool>(),
        option::of((extra_name, json_value())),
    )
        .prop_map(|(message_id, from, to, ts, text, explicit_null, extra)| Valid {
            message_id,
            from,
            to,
            ts,
            text,
            explicit_null,
            extra,
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z_]{1,10}", inner), 0..4).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Values for one field: `None` leaves the field out.
fn field(
    valid: BoxedStrategy<Value>,
    near_miss: BoxedStrategy<Value>,
) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => valid.prop_map(Some),
        2 => near_miss.prop_map(Some),
        1 => json_value().prop_map(Some),
        1 => Just(None),
    ]
}

fn string_value(strategy: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Value> {
    strategy.prop_map(Value::String).boxed()
}

/// An independent judge of the validation rules for one field (`None` when absent).
fn field_is_valid(name: &str, value: Option<&Value>) -> bool {
    let text = |value: Option<&Value>| match value {
        Some(Value::String(text)) => Some(text.clone()),
        _ => None,
    };
    match name {
        "message_id" => {
            text(value).is_some_and(|id| (1..=256).contains(&id.chars().count()) && !id.contains('\0'))
        }
        "from" | "to" => text(value).is_some_and(|number| {
            number
                .strip_prefix('+')
                .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        }),
        "ts" => text(value).is_some_and(|ts| oracle_accepts(&ts)),
        "text" => match value {
            None | Some(Value::Null) => true,
            Some(Value::String(text)) => text.chars().count() <= 4096 && !text.contains('\0'),
            Some(_) => false,
        },
        _ => unreachable!(),
    }
}

fn message_fields() -> impl Strategy<Value = Vec<(&'static str, Option<Value>)>> {
    let message_id = field(
        string_value(chars_without_nul(1..=MAX_MESSAGE_ID_CHARS)),
        prop_oneof![
            Just(json!("")),
            string_value(chars_without_nul(257..=300)),
            string_value("[a-z]{0,5}\\x00[a-z]{0,5}"),
            any::<i64>().prop_map(Value::from),
        ]
        .boxed(),
    );
    let number = || {
        field(
            string_value(msisdn()),
            prop_oneof![
                string_value("\\+?[0-9 ]{0,6}[0-9a\u{0660}+-]{0,3}"),
                string_value("[+]{1,2}[0-9]{0,4}"),
                any::<u64>().prop_map(Value::from),
            ]
            .boxed(),
        )
    };
    let ts = field(
        string_value(some_parts().prop_map(|parts| parts.text())),
        prop_oneof![string_value(raw_timestamp()), string_value(near_miss_timestamp())].boxed(),
    );
    let text = field(
        prop_oneof![Just(Value::Null), string_value(chars_without_nul(0..=64))].boxed(),
        prop_oneof![
            string_value(chars_without_nul(4097..=4100)),
            Just(json!("a\u{0}b")),
            any::<bool>().prop_map(Value::Bool),
        ]
        .boxed(),
    );
    (message_id, number(), number(), ts, text).prop_map(|(message_id, from, to, ts, text)| {
        vec![
            ("message_id", message_id),
            ("from", from),
            ("to", to),
            ("ts", ts),
            ("text", text),
        ]
    })
}

/// Byte soup that is often almost JSON.
fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("\"message_id\"".to_owned()),
        Just("\"from\"".to_owned()),
        Just("\"ts\"".to_owned()),
        Just("\"text\"".to_owned()),
        Just("\"+1\"".to_owned()),
        Just("\"2025-01-15T10:00:00Z\"".to_owned()),
        Just("null".to_owned()),
        Just("1e999".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        "[0-9.eE+-]{1,8}",
        "\"[^\"\\\\]{0,8}\"",
    ];
    prop_oneof![
        vec(any::<u8>(), 0..512),
        vec(token, 0..40).prop_map(|tokens| tokens.concat().into_bytes()),
    ]
}

/// The names along each error's `loc` (a Part A body has no arrays, so that is all of it).
fn locs(errors: &[webhook_inbox::message::FieldError]) -> BTreeSet<Vec<&str>> {
    errors
        .iter()
        .map(|error| error.loc.iter().filter_map(|part| part.as_name()).collect())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsing_never_panics_and_every_error_points_into_the_body(body in json_ish_bytes()) {
        if let Err(errors) = parse_message(&body) {
            prop_assert!(!errors.is_empty());
            for error in &errors {
                prop_assert_eq!(error.loc.first().and_then(|part| part.as_name()), Some("body"), "{:?}", error);
                prop_assert!(!error.msg.is_empty());
            }
            prop_assert!(serde_json::to_value(&errors).is_ok());
        }
    }

    #[test]
    fn valid_messages_parse_and_keep_every_value(valid in valid_message()) {
        let body = serde_json::to_vec(&Value::Object(valid.object())).unwrap();
        let parsed = parse_message(&body);
        prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
        let message = parsed.unwrap();
        prop_assert_eq!(&message.message_id, &valid.message_id);
        prop_assert_eq!(&message.from, &valid.from);
        prop_assert_eq!(&message.to, &valid.to);
        prop_assert_eq!(message.ts.as_str(), valid.ts.text());
        prop_assert_eq!(&message.text, &valid.text);
        // And back: serialising the message gives the same field values.
        let mut expected = valid.object();
        expected.remove("text");
        if let Some((name, _)) = &valid.extra {
            expected.remove(name);
        }
        let mut round_trip = serde_json::to_value(&message).unwrap();
        let text = round_trip.as_object_mut().unwrap().remove("text").unwrap();
        prop_assert_eq!(text, json!(valid.text));
        prop_assert_eq!(round_trip, Value::Object(expected));
    }

    #[test]
    fn an_overlong_string_is_rejected_at_its_loc_as_too_long(
        valid in valid_message(),
        (field, value) in prop_oneof![
            chars_without_nul(MAX_MESSAGE_ID_CHARS + 1..=MAX_MESSAGE_ID_CHARS + 300)
                .prop_map(|id| ("message_id", id)),
            chars_without_nul(MAX_TEXT_CHARS + 1..=MAX_TEXT_CHARS + 200).prop_map(|text| ("text", text)),
        ],
    ) {
        let mut object = valid.object();
        object.insert(field.into(), json!(value));
        let errors = parse_message(&serde_json::to_vec(&object).unwrap()).unwrap_err();
        prop_assert_eq!(errors.len(), 1, "{:?}", errors);
        prop_assert_eq!(&errors[0].loc, &vec!["body", field]);
        prop_assert_eq!(errors[0].kind, "string_too_long");
    }

    #[test]
    fn a_body_is_accepted_exactly_when_every_field_is_valid(fields in message_fields()) {
        let object: Map<String, Value> = fields
            .iter()
            .filter_map(|(name, value)| value.clone().map(|value| ((*name).to_owned(), value)))
            .collect();
        let invalid: BTreeSet<Vec<&'static str>> = fields
            .iter()
            .filter(|(name, value)| !field_is_valid(name, value.as_ref()))
            .map(|(name, _)| vec!["body", *name])
            .collect();
        let body = serde_json::to_vec(&Value::Object(object)).unwrap();
        match parse_message(&body) {
            Ok(message) => {
                prop_assert!(invalid.is_empty(), "accepted despite {:?}: {:?}", invalid, message);
            }
            Err(errors) => {
                prop_assert!(!invalid.is_empty(), "rejected a valid body: {:?}", errors);
                prop_assert_eq!(locs(&errors), invalid, "{:?}", errors);
            }
        }
    }
}
