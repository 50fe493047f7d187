//! The message model and its validation, with FastAPI-style error entries.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

pub const MAX_MESSAGE_ID_CHARS: usize = 256;
pub const MAX_TEXT_CHARS: usize = 4096;
pub const MSISDN_PATTERN: &str = r"^\+[0-9]+$";
/// Exactly what `Timestamp::parse` accepts, as a JSON Schema pattern (for the OpenAPI document):
/// years 0001 to 9999, each month's own days, 29 February in leap years only. A unit test holds
/// the two together.
pub const TIMESTAMP_PATTERN: &str = concat!(
    "^(?:",
    // Any year but 0000, then a day that every year has.
    "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-",
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    // 29 February: a year divisible by 4 but not by 100, or by 400 (not 0000).
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29",
    r")T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?Z$",
);
/// Text without U+0000, which neither store can hold (for the OpenAPI document).
pub const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// A message that passed every rule of its source. It serializes as the Part A fields alone,
/// the items of `/messages`; [`WithSource`] adds `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub ts: Timestamp,
    pub text: Option<String>,
    #[serde(skip)]
    pub source: Source,
}

/// The message as the export and the detail show it: the Part A fields, then `source`.
#[derive(Debug, Serialize)]
pub struct WithSource<'a> {
    #[serde(flatten)]
    pub message: &'a Message,
    pub source: Source,
}

impl Message {
    pub fn with_source(&self) -> WithSource<'_> {
        WithSource {
            message: self,
            source: self.source,
        }
    }
}

/// Where a message came in: `POST /webhook` (Part A) or a provider's own route (docs/providers.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Webhook,
    Whatsapp,
    Twilio,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Webhook, Source::Whatsapp, Source::Twilio];

    /// The name the API, the database and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Whatsapp => "whatsapp",
            Source::Twilio => "twilio",
        }
    }

    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|source| source.as_str() == name)
    }
}

/// A message on its way to the store, with what its provider sent for it: the JSON of that one
/// message (for Twilio, its form fields as an object), or `None` for a Part A message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub message: Message,
    /// JSON text, stored as it is and served inside the detail's JSON.
    pub raw: Option<String>,
}

impl From<Message> for NewMessage {
    fn from(message: Message) -> Self {
        NewMessage { message, raw: None }
    }
}

/// A UTC instant as the client wrote it, plus a key that sorts as the instant does.
///
/// `10:00:00.5Z` sorts before `10:00:00Z` as text but comes after it in time; the key pads the
/// fraction to nine digits (`...10:00:00.500000000Z` vs `...10:00:00.000000000Z`) so plain text
/// comparison in any database orders instants correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    verbatim: String,
    sort_key: String,
}

impl Timestamp {
    /// Accepts `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` for a real calendar instant in years 0001 to 9999.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        if bytes.len() < 20 || bytes.last() != Some(&b'Z') {
            return None;
        }
        let (fixed, rest) = bytes.split_at(19);
        let separators_ok = fixed[4] == b'-'
            && fixed[7] == b'-'
            && fixed[10] == b'T'
            && fixed[13] == b':'
            && fixed[16] == b':';
        if !separators_ok {
            return None;
        }
        let year = digits(&fixed[0..4])?;
        let month = digits(&fixed[5..7])?;
        let day = digits(&fixed[8..10])?;
        let hour = digits(&fixed[11..13])?;
        let minute = digits(&fixed[14..16])?;
        let second = digits(&fixed[17..19])?;
        let calendar_ok = year >= 1
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        if !calendar_ok {
            return None;
        }
        let fraction = match &rest[..rest.len() - 1] {
            [] => &[][..],
            [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
                digits(fraction)?;
                fraction
            }
            _ => return None,
        };
        let mut sort_key = String::with_capacity(30);
        sort_key.push_str(&text[..19]);
        sort_key.push('.');
        for position in 0..9 {
            sort_key.push(fraction.get(position).map_or('0', |&digit| char::from(digit)));
        }
        sort_key.push('Z');
        Some(Timestamp {
            verbatim: text.to_owned(),
            sort_key,
        })
    }

    /// A timestamp read back from storage, where both forms were kept.
    pub fn from_stored(verbatim: String, sort_key: String) -> Timestamp {
        Timestamp { verbatim, sort_key }
    }

    /// The text the client sent, returned verbatim.
    pub fn as_str(&self) -> &str {
        &self.verbatim
    }

    /// Fixed-width text that orders as the instant does.
    pub fn sort_key(&self) -> &str {
        &self.sort_key
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.verbatim)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.verbatim)
    }
}

/// The value of ASCII digits, or `None` if any byte is not one.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit().then(|| value * 10 + u32::from(byte - b'0'))
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unicode full case folding, the form in which `q` and `text` are compared. An ASCII text folds
/// to its ASCII lower case, which is cheaper to compute.
pub fn fold_case(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    caseless::default_case_fold_str(text)
}

/// Whether `fold_case(text)` contains `folded_needle` (a needle already case-folded).
///
/// An ASCII text folds to its ASCII lower case, so it is compared in place, without building
/// the folded copy: the scan for a term too short for the search index calls this once per
/// stored row. A folded needle with a byte outside ASCII cannot occur in an ASCII text.
pub fn folded_contains(text: &str, folded_needle: &str) -> bool {
    if !text.is_ascii() {
        return fold_case(text).contains(folded_needle);
    }
    let (haystack, needle) = (text.as_bytes(), folded_needle.as_bytes());
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = haystack.len().checked_sub(needle.len()) else {
        return false;
    };
    // Jump between the places where the needle's first byte occurs, in either case.
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), &haystack[..=last_start])
        .any(|at| haystack[at + 1..at + needle.len()].eq_ignore_ascii_case(rest))
}

/// `+` followed by one or more ASCII digits, nothing else.
pub fn is_msisdn(value: &str) -> bool {
    value
        .strip_prefix('+')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// One broken rule, shaped like a FastAPI (pydantic v2) validation error entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// What kind of rule broke, in pydantic's words (`missing`, `string_too_long`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: `["body"]`, `["body", field]` or `["query", parameter]`; inside a provider's
    /// body, the path down to the field, with array positions as numbers.
    #[schema(min_items = 1, inline)]
    pub loc: Vec<LocPart>,
    pub msg: String,
    /// The value that broke the rule (any JSON value).
    #[schema(value_type = Value)]
    pub input: Value,
    /// The rule's parameters, e.g. `{"max_length": 4096}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Value>,
}

/// One step of an error's `loc`: a field's name or an array position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LocPart {
    Name(&'static str),
    /// A name taken from the input (a provider's own message type).
    Key(String),
    Index(usize),
}

impl utoipa::PartialSchema for LocPart {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .into()
    }
}

impl utoipa::ToSchema for LocPart {}

impl LocPart {
    /// The field's name; `None` for an array position.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            LocPart::Name(name) => Some(name),
            LocPart::Key(key) => Some(key),
            LocPart::Index(_) => None,
        }
    }
}

/// A `loc` of names only, as `FieldError::new` takes it.
pub fn loc(names: Vec<&'static str>) -> Vec<LocPart> {
    names.into_iter().map(LocPart::Name).collect()
}

impl From<&'static str> for LocPart {
    fn from(name: &'static str) -> Self {
        LocPart::Name(name)
    }
}

impl From<usize> for LocPart {
    fn from(index: usize) -> Self {
        LocPart::Index(index)
    }
}

impl PartialEq<&str> for LocPart {
    fn eq(&self, other: &&str) -> bool {
        match self {
            LocPart::Name(name) => name == other,
            LocPart::Key(key) => key == other,
            LocPart::Index(_) => false,
        }
    }
}

impl FieldError {
    pub fn new(kind: &'static str, loc: Vec<&'static str>, msg: impl Into<String>, input: Value) -> Self {
        Self::at(kind, self::loc(loc), msg, input)
    }

    /// An entry at a `loc` that may hold array positions.
    pub fn at(kind: &'static str, loc: Vec<LocPart>, msg: impl Into<String>, input: Value) -> Self {
        FieldError {
            kind,
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }
}

/// The entry of a string longer than `max_chars` characters.
pub fn too_long(loc: Vec<&'static str>, max_chars: usize, input: Value) -> FieldError {
    too_long_at(loc.into_iter().map(LocPart::from).collect(), max_chars, input)
}

/// [`too_long`] at a `loc` that may hold array positions.
pub fn too_long_at(loc: Vec<LocPart>, max_chars: usize, input: Value) -> FieldError {
    FieldError::at(
        "string_too_long",
        loc,
        format!("String should have at most {max_chars} characters"),
        input,
    )
    .with_ctx(json!({ "max_length": max_chars }))
}

/// Parses and validates a `/webhook` body, collecting every broken rule.
pub fn parse_message(body: &[u8]) -> Result<Message, Vec<FieldError>> {
    let fields = parse_object(body)?;
    let mut errors = Vec::new();
    let message_id = required(&fields, "message_id", &mut errors).and_then(|value| {
        check_string(
            value,
            body_field("message_id"),
            1,
            MAX_MESSAGE_ID_CHARS,
            &mut errors,
        )
    });
    let from = required(&fields, "from", &mut errors)
        .and_then(|value| check_msisdn(value, body_field("from"), &mut errors));
    let to = required(&fields, "to", &mut errors)
        .and_then(|value| check_msisdn(value, body_field("to"), &mut errors));
    let ts = required(&fields, "ts", &mut errors).and_then(|value| check_timestamp(value, &mut errors));
    let text = match fields.get("text") {
        None | Some(Value::Null) => Some(None),
        Some(value) => check_string(value, body_field("text"), 0, MAX_TEXT_CHARS, &mut errors).map(Some),
    };
    match (message_id, from, to, ts, text) {
        (Some(message_id), Some(from), Some(to), Some(ts), Some(text)) if errors.is_empty() => Ok(Message {
            message_id,
            from,
            to,
            ts,
            text,
            source: Source::Webhook,
        }),
        _ => Err(errors),
    }
}

/// The body as a JSON object, or the single entry that says why it is not one.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Vec<FieldError>> {
    let whole_body_error = |error| vec![error];
    if body.is_empty() {
        return Err(whole_body_error(FieldError::new(
            "missing",
            vec!["body"],
            "Field required",
            Value::Null,
        )));
    }
    let text = std::str::from_utf8(body)
        .map_err(|error| whole_body_error(json_invalid(format!("body is not valid UTF-8: {error}"))))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(other) => Err(whole_body_error(FieldError::new(
            "model_attributes_type",
            vec!["body"],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        ))),
        Err(error) => Err(whole_body_error(json_invalid(error.to_string()))),
    }
}

fn json_invalid(reason: String) -> FieldError {
    FieldError::new("json_invalid", vec!["body"], "JSON decode error", json!({}))
        .with_ctx(json!({ "error": reason }))
}

fn required<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    required_at(fields, name, body_field(name), errors)
}

/// The field `name` of `fields`, or a `missing` entry at `loc`.
pub fn required_at<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    loc: Vec<LocPart>,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    let value = fields.get(name);
    if value.is_none() {
        errors.push(FieldError::at(
            "missing",
            loc,
            "Field required",
            Value::Object(fields.clone()),
        ));
    }
    value
}

/// `["body", name]`.
fn body_field(name: &'static str) -> Vec<LocPart> {
    vec![LocPart::Name("body"), LocPart::Name(name)]
}

/// A string of `min_chars` to `max_chars` characters without U+0000, else an entry at `loc`.
pub fn check_string(
    value: &Value,
    loc: Vec<LocPart>,
    min_chars: usize,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let Value::String(text) = value else {
        errors.push(FieldError::at(
            "string_type",
            loc,
            "Input should be a valid string",
            value.clone(),
        ));
        return None;
    };
    let chars = text.chars().count();
    if chars < min_chars {
        errors.push(
            FieldError::at(
                "string_too_short",
                loc,
                format!("String should have at least {min_chars} character"),
                value.clone(),
            )
            .with_ctx(json!({ "min_length": min_chars })),
        );
        return None;
    }
    if chars > max_chars {
        errors.push(too_long_at(loc, max_chars, value.clone()));
        return None;
    }
    // PostgreSQL cannot store U+0000 in text; rejecting it keeps both backends answering alike.
    if text.contains('\0') {
        errors.push(FieldError::at(
            "value_error",
            loc,
            "Value error, must not contain the NUL character (U+0000)",
            value.clone(),
        ));
        return None;
    }
    Some(text.clone())
}

/// `+` then digits, else an entry at `loc`.
pub fn check_msisdn(value: &Value, loc: Vec<LocPart>, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        Value::String(text) if is_msisdn(text) => Some(text.clone()),
        Value::String(_) => {
            errors.push(
                FieldError::at(
                    "string_pattern_mismatch",
                    loc,
                    format!("String should match pattern '{MSISDN_PATTERN}'"),
                    value.clone(),
                )
                .with_ctx(json!({ "pattern": MSISDN_PATTERN })),
            );
            None
        }
        _ => {
            errors.push(FieldError::at(
                "string_type",
                loc,
                "Input should be a valid string",
                value.clone(),
            ));
            None
        }
    }
}

fn check_timestamp(value: &Value, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    let Value::String(text) = value else {
        errors.push(FieldError::new(
            "string_type",
            vec!["body", "ts"],
            "Input should be a valid string",
            value.clone(),
        ));
        return None;
    };
    let parsed = Timestamp::parse(text);
    if parsed.is_none() {
        errors.push(timestamp_error(vec!["body", "ts"], value.clone()));
    }
    parsed
}

/// The entry for a `ts` or `since` value that is not a UTC instant in the accepted form.
pub fn timestamp_error(loc: Vec<&'static str>, input: Value) -> FieldError {
    FieldError::new(
        "value_error",
        loc,
        "Value error, expected a UTC timestamp YYYY-MM-DDTHH:MM:SS[.fraction]Z for a real calendar instant",
        input,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_accept_the_documented_forms() {
        for good in [
            "2025-01-15T10:00:00Z",
            "2025-01-15T10:00:00.5Z",
            "2025-01-15T10:00:00.123456789Z",
            "2024-02-29T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert!(Timestamp::parse(good).is_some(), "{good} rejected");
        }
    }

    #[test]
    fn timestamps_reject_everything_else() {
        for bad in [
            "2025-02-30T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "1900-02-29T10:00:00Z",
            "2025-13-01T10:00:00Z",
            "2025-00-01T10:00:00Z",
            "2025-01-00T10:00:00Z",
            "2025-01-15T24:00:00Z",
            "2025-01-15T10:60:00Z",
            "2025-01-15T10:00:60Z",
            "0000-01-01T00:00:00Z",
            "2025-01-15T10:00:00",
            "2025-01-15T10:00:00+05:30",
            "2025-01-15T10:00:00+00:00",
            "2025-01-15 10:00:00Z",
            "2025-01-15T10:00:00.Z",
            "2025-01-15T10:00:00.1234567890Z",
            "2025-01-15T10:00:00zZ",
            "2025-01-15t10:00:00Z",
            "2025-01-15T10:00:00z",
            "+2025-01-15T10:00:00Z",
            "2025-1-15T10:00:00Z",
            "２０２５-01-15T10:00:00Z",
            "",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn sort_keys_order_fractions_as_instants() {
        let whole = Timestamp::parse("2025-01-15T10:00:00Z").unwrap();
        let half = Timestamp::parse("2025-01-15T10:00:00.5Z").unwrap();
        assert!(half.as_str() < whole.as_str(), "the text order is the trap");
        assert!(whole.sort_key() < half.sort_key());
        assert_eq!(half.sort_key(), "2025-01-15T10:00:00.500000000Z");
    }

    #[test]
    fn msisdn_is_plus_then_ascii_digits() {
        assert!(is_msisdn("+919876543210"));
        assert!(is_msisdn("+1"));
        for bad in [
            "+",
            "919876543210",
            "++91",
            "+91 98",
            "+９１",
            "+91a",
            " +91",
            "+91\n",
        ] {
            assert!(!is_msisdn(bad), "{bad:?} accepted");
        }
    }

    /// `TIMESTAMP_PATTERN` (the OpenAPI document's) accepts exactly what `Timestamp::parse` does.
    fn pattern_agrees(text: &str) -> bool {
        static PATTERN: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(TIMESTAMP_PATTERN).expect("a valid pattern"));
        PATTERN.is_match(text) == Timestamp::parse(text).is_some()
    }

    #[test]
    fn the_documented_timestamp_pattern_matches_the_parser_on_every_calendar_edge() {
        let years = [
            "0000", "0001", "0004", "0100", "0400", "1900", "2000", "2023", "2024", "2100", "9996", "9999",
        ];
        for year in years {
            for month in 0..=13 {
                for day in 0..=32 {
                    let date = format!("{year}-{month:02}-{day:02}");
                    for time in [
                        "T00:00:00Z",
                        "T23:59:59.123456789Z",
                        "T24:00:00Z",
                        "T10:60:00Z",
                        "T10:00:60Z",
                    ] {
                        let text = format!("{date}{time}");
                        assert!(pattern_agrees(&text), "{text}");
                    }
                }
            }
        }
        for text in [
            "2025-01-15T10:00:00.Z",
            "2025-01-15T10:00:00.1234567890Z",
            "2025-01-15T10:00:00",
            "2025-01-15 10:00:00Z",
            "2025-01-15T10:00:00+05:30",
            "x2025-01-15T10:00:00Z",
        ] {
            assert!(pattern_agrees(text), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_documented_timestamp_pattern_matches_the_parser(
            text in r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,10})?Z?",
        ) {
            proptest::prop_assert!(pattern_agrees(&text), "{}", text);
        }

        #[test]
        fn folded_contains_agrees_with_folding_the_text(
            // ASCII texts take the fast path, the others the folding one.
            text in proptest::prop_oneof![r"[a-zA-Z0-9 %_]{0,24}", r"[a-zA-Z %_\u{212a}\u{17f}ßẞΣσς]{0,24}"],
            needle in r"[a-zA-Z %_\u{212a}\u{17f}ßẞΣσς]{0,3}",
        ) {
            let folded_needle = caseless::default_case_fold_str(&needle);
            proptest::prop_assert_eq!(
                folded_contains(&text, &folded_needle),
                caseless::default_case_fold_str(&text).contains(&folded_needle),
                "{:?} in {:?}", needle, text
            );
        }
    }

    #[test]
    fn fold_case_of_every_ascii_character_is_the_full_unicode_folding() {
        for byte in 0..=127u8 {
            let text = char::from(byte).to_string();
            assert_eq!(fold_case(&text), caseless::default_case_fold_str(&text), "{byte}");
        }
    }

    #[test]
    fn folded_contains_compares_ascii_texts_case_insensitively() {
        assert!(folded_contains("Hello World", "o w"));
        assert!(folded_contains("Hello", ""));
        assert!(!folded_contains("Hello", "hellos"));
        assert!(!folded_contains("Hello", "héllo"));
        // A Kelvin sign folds to k: the text is not ASCII, so it takes the folding path.
        assert!(folded_contains("\u{212a}ey", "ke"));
        assert!(folded_contains("STRASSE", &fold_case("straße")));
    }
}
