//! The query string of the reads (`/messages`, `/messages/export`, `/messages/stream`,
//! `/stats/timeline`): read by one piece of code, so all take the same filters under the same
//! rules.

use serde_json::Value;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Object, Required};

use crate::message::{
    FieldError, NO_NUL_PATTERN, Source, TIMESTAMP_PATTERN, Timestamp, timestamp_error, too_long,
};
use crate::store::MessageFilter;

/// The longest `q`, in characters: a search term, not a document (each character of it is a
/// trigram to look up).
pub const MAX_Q_CHARS: usize = 256;

/// The filters `take_filter` reads, for the OpenAPI document.
pub enum FilterParams {}

impl IntoParams for FilterParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NO_NUL_PATTERN))
        };
        vec![
            query_parameter(
                "from",
                "Exact sender. An unencoded `+` arrives as a space: a space then digits means `+` then those digits. Empty: no constraint.",
                text().examples([Value::from("+919876543210")]).build(),
            ),
            query_parameter(
                "since",
                "Only rows with `ts` at or after this instant (the `ts` format of the webhook).",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(TIMESTAMP_PATTERN))
                    .examples([Value::from("2025-01-15T00:00:00Z")])
                    .build(),
            ),
            query_parameter(
                "q",
                "Case-insensitive, Unicode-aware substring of `text`; `%` and `_` are ordinary characters; at most 256 characters. Empty: no constraint.",
                text()
                    .max_length(Some(MAX_Q_CHARS))
                    .examples([Value::from("hello")])
                    .build(),
            ),
            source_parameter("Only messages from this source. Empty: no constraint."),
        ]
    }
}

/// An optional query parameter.
pub fn query_parameter(name: &str, description: &str, schema: Object) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The parameters the message reads know, as text. When a parameter repeats, the last one
/// counts; unknown parameters are ignored.
#[derive(Debug, Default)]
pub struct RawParams {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub cursor: Option<String>,
    pub from: Option<String>,
    pub since: Option<String>,
    pub q: Option<String>,
    pub format: Option<String>,
    pub order: Option<String>,
    pub source: Option<String>,
    pub include: Option<String>,
    pub after: Option<String>,
    pub bucket: Option<String>,
    pub status: Option<String>,
    pub destination: Option<String>,
    pub message_id: Option<String>,
}

impl RawParams {
    pub fn read(query: &str) -> RawParams {
        let mut raw = RawParams::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "limit" => &mut raw.limit,
                "offset" => &mut raw.offset,
                "cursor" => &mut raw.cursor,
                "from" => &mut raw.from,
                "since" => &mut raw.since,
                "q" => &mut raw.q,
                "format" => &mut raw.format,
                "order" => &mut raw.order,
                "source" => &mut raw.source,
                "include" => &mut raw.include,
                "after" => &mut raw.after,
                "bucket" => &mut raw.bucket,
                "status" => &mut raw.status,
                "destination" => &mut raw.destination,
                "message_id" => &mut raw.message_id,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        raw
    }

    /// The filter that `from`, `since` and `q` ask for (taking them out), with an error entry in
    /// `errors` for each bad one. Empty `from` and `q` mean no constraint.
    pub fn take_filter(&mut self, errors: &mut Vec<FieldError>) -> MessageFilter {
        let source = take_source(&mut self.source, errors);
        let since = self.since.take().and_then(|text| {
            let parsed = Timestamp::parse(&text);
            if parsed.is_none() {
                errors.push(timestamp_error(vec!["query", "since"], Value::String(text)));
            }
            parsed
        });
        // No stored `from` or `text` holds U+0000 (the body rules refuse it), and neither database
        // takes it in a query (SQLite's FTS5 syntax and PostgreSQL's text both stop at it).
        reject_nul(self.from.as_deref(), "from", errors);
        reject_nul(self.q.as_deref(), "q", errors);
        if let Some(q) = self.q.as_deref().filter(|q| q.chars().count() > MAX_Q_CHARS) {
            errors.push(too_long(
                vec!["query", "q"],
                MAX_Q_CHARS,
                Value::String(q.to_owned()),
            ));
        }
        MessageFilter {
            from: self.from.take().filter(|from| !from.is_empty()).map(restore_plus),
            since,
            text_contains: self.q.take().filter(|q| !q.is_empty()),
            source,
        }
    }
}

/// The source `source` names; empty means no constraint, any other name is an error entry.
pub fn take_source(source: &mut Option<String>, errors: &mut Vec<FieldError>) -> Option<Source> {
    let name = source.take().filter(|name| !name.is_empty())?;
    let found = Source::parse(&name);
    if found.is_none() {
        errors.push(
            FieldError::new(
                "enum",
                vec!["query", "source"],
                "Input should be 'webhook', 'whatsapp' or 'twilio'",
                Value::String(name),
            )
            .with_ctx(serde_json::json!({ "expected": "'webhook', 'whatsapp' or 'twilio'" })),
        );
    }
    found
}

/// The `source` parameter, for the OpenAPI document.
pub fn source_parameter(description: &str) -> Parameter {
    query_parameter(
        "source",
        description,
        ObjectBuilder::new()
            .schema_type(Type::String)
            // Empty means no constraint, as for `from` and `q`.
            .enum_values(Some(std::iter::once("").chain(Source::ALL.map(Source::as_str))))
            .build(),
    )
}

fn reject_nul(value: Option<&str>, name: &'static str, errors: &mut Vec<FieldError>) {
    if let Some(text) = value.filter(|text| text.contains('\0')) {
        errors.push(FieldError::new(
            "value_error",
            vec!["query", name],
            "Value error, must not contain the NUL character (U+0000)",
            Value::String(text.to_owned()),
        ));
    }
}

/// An unencoded `+` in a query string arrives as a space: `?from=+91…` means `+91…`.
fn restore_plus(from: String) -> String {
    match from.strip_prefix(' ') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            format!("+{digits}")
        }
        _ => from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::loc;

    fn filter_of(query: &str) -> (MessageFilter, Vec<FieldError>) {
        let mut errors = Vec::new();
        let filter = RawParams::read(query).take_filter(&mut errors);
        (filter, errors)
    }

    #[test]
    fn an_unencoded_plus_in_from_is_restored() {
        assert_eq!(
            filter_of("from=+919876543210").0.from.as_deref(),
            Some("+919876543210")
        );
        assert_eq!(
            filter_of("from=%2B919876543210").0.from.as_deref(),
            Some("+919876543210")
        );
        assert_eq!(filter_of("from=%20abc").0.from.as_deref(), Some(" abc"));
        assert_eq!(filter_of("from=+").0.from.as_deref(), Some(" "));
    }

    #[test]
    fn the_last_of_a_repeated_parameter_counts_and_empty_ones_mean_no_constraint() {
        let (filter, errors) = filter_of("q=a&q=bcd&from=&since=2025-01-15T10:00:00Z&other=1");
        assert!(errors.is_empty());
        assert_eq!(filter.text_contains.as_deref(), Some("bcd"));
        assert_eq!(filter.from, None);
        assert_eq!(
            filter.since.as_ref().map(Timestamp::as_str),
            Some("2025-01-15T10:00:00Z")
        );
        assert_eq!(filter_of("q=").0, MessageFilter::default());
    }

    #[test]
    fn bad_filters_are_reported_in_order() {
        let (_, errors) = filter_of("since=2025-02-30T00:00:00Z&q=a%00b&from=%2B9%00");
        let found: Vec<_> = errors
            .iter()
            .map(|error| (error.kind, error.loc.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("value_error", loc(vec!["query", "since"])),
                ("value_error", loc(vec!["query", "from"])),
                ("value_error", loc(vec!["query", "q"])),
            ]
        );
    }
}
