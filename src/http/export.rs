//! `GET /messages/export?format=ndjson|csv`: every message that matches the
//! `/messages` filters, in the `/messages` order, streamed in constant memory.
//!
//! The first page is read before the answer starts, so a database that fails at once gets the
//! usual 503. Later pages are read as the client takes the body; a failure then can no longer
//! change the status, so the body ends with an error: hyper closes the connection without the
//! final empty chunk, and the client sees a truncated transfer, never a complete-looking file.
//!
//! `limit`, `offset` and `cursor` are refused (422, `extra_forbidden`) rather than ignored: an
//! export always holds every matching row, and a client that asked for a page should learn that
//! instead of receiving millions of rows.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::ApiError;
use super::error::{ErrorDetail, ValidationErrors};
use super::query::{FilterParams, RawParams, query_parameter};
use crate::app::AppState;
use crate::message::{FieldError, Message};
use crate::store::{ExportPages, MessageFilter, StoreError};

pub const PATH: &str = "/messages/export";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(export))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Ndjson,
    Csv,
}

const CSV_HEADER: &[u8] = b"message_id,from,to,ts,text,source\r\n";

impl ExportFormat {
    fn parse(text: &str) -> Option<ExportFormat> {
        [ExportFormat::Ndjson, ExportFormat::Csv]
            .into_iter()
            .find(|format| format.name() == text)
    }

    fn name(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// What comes before the first row.
    fn head(self) -> &'static [u8] {
        match self {
            ExportFormat::Ndjson => b"",
            ExportFormat::Csv => CSV_HEADER,
        }
    }

    /// Appends `rows` to `out`, one line each.
    fn encode(self, rows: &[Message], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        for message in rows {
            match self {
                ExportFormat::Ndjson => {
                    serde_json::to_writer(&mut *out, &message.with_source())?;
                    out.push(b'\n');
                }
                ExportFormat::Csv => csv_row(message, out),
            }
        }
        Ok(())
    }
}

/// `format`, for the OpenAPI document.
pub enum FormatParam {}

impl IntoParams for FormatParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let formats = [ExportFormat::Ndjson, ExportFormat::Csv].map(ExportFormat::name);
        vec![query_parameter(
            "format",
            "`ndjson` (one message object per line, with its `source`) or `csv` (header `message_id,from,to,ts,text,source`, RFC 4180, CRLF).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(formats))
                .default(Some(json!(ExportFormat::Ndjson.name())))
                .build(),
        )]
    }
}

/// Every message that matches the filters, in the `/messages` order, streamed.
/// `limit`, `offset` and `cursor` are refused (422 `extra_forbidden`). A database failure after
/// the first rows cuts the body short (the transfer ends without its last chunk).
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    params(FormatParam, FilterParams),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The whole export, as an attachment (`Content-Disposition`).",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"messages-<UTC time>.<format>\"`")),
            content(
                (String = "application/x-ndjson", example = json!("{\"message_id\":\"m1\",\"from\":\"+919876543210\",\"to\":\"+14155550100\",\"ts\":\"2025-01-15T10:00:00Z\",\"text\":\"Hello\"}\n")),
                (String = "text/csv", example = json!("message_id,from,to,ts,text,source\r\nm1,+919876543210,+14155550100,2025-01-15T10:00:00Z,Hello,webhook\r\n")),
            )),
        (status = 422, description = "A bad parameter: one entry per bad one.", body = ValidationErrors),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn export(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (filter, format) = parse_query(query.as_deref().unwrap_or_default()).map_err(ApiError::Validation)?;
    let mut pages = ExportPages::new(Arc::clone(&state.store), filter);
    let first = pages.next_page().await.unwrap_or(Ok(Vec::new()))?;
    let mut opening = format.head().to_vec();
    format
        .encode(&first, &mut opening)
        .map_err(|error| ApiError::Internal(format!("encoding the export: {error}")))?;
    drop(first);
    let body = stream::once(async move { Ok(Bytes::from(opening)) }).chain(later_pages(pages, format));
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(format, OffsetDateTime::now_utc())) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// Why the body of an export stopped short.
#[derive(Debug, thiserror::Error)]
enum ExportFailed {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding the export: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// The pages after the first, encoded, one chunk per non-empty page; after an error, nothing.
fn later_pages(pages: ExportPages, format: ExportFormat) -> impl Stream<Item = Result<Bytes, ExportFailed>> {
    stream::unfold(Some(pages), move |pages| async move {
        let mut pages = pages?;
        loop {
            let encoded = match pages.next_page().await? {
                Ok(rows) if rows.is_empty() => continue,
                Ok(rows) => encode_page(format, &rows),
                Err(error) => Err(ExportFailed::Store(error)),
            };
            return Some(match encoded {
                Ok(chunk) => (Ok(chunk), Some(pages)),
                Err(error) => {
                    tracing::error!(error = %error, "export cut short: the client gets a truncated body");
                    (Err(error), None)
                }
            });
        }
    })
}

fn encode_page(format: ExportFormat, rows: &[Message]) -> Result<Bytes, ExportFailed> {
    let mut chunk = Vec::with_capacity(rows.len() * 128);
    format.encode(rows, &mut chunk)?;
    Ok(Bytes::from(chunk))
}

const FILENAME_TIME: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// `attachment; filename="messages-20250115T100000Z.csv"`: the UTC time of the export, without
/// the colons some file systems refuse.
fn content_disposition(format: ExportFormat, now: OffsetDateTime) -> String {
    let stamp = now
        .format(FILENAME_TIME)
        .unwrap_or_else(|_| String::from("export"));
    format!("attachment; filename=\"messages-{stamp}.{}\"", format.name())
}

/// The filters of `/messages` (read by the same code) and `format`, with an entry for every bad
/// parameter.
fn parse_query(query: &str) -> Result<(MessageFilter, ExportFormat), Vec<FieldError>> {
    let mut raw = RawParams::read(query);
    let mut errors = Vec::new();
    for (name, value) in [
        ("limit", raw.limit.take()),
        ("offset", raw.offset.take()),
        ("cursor", raw.cursor.take()),
    ] {
        if let Some(value) = value {
            errors.push(FieldError::new(
                "extra_forbidden",
                vec!["query", name],
                "Extra inputs are not permitted: an export holds every matching row",
                Value::String(value),
            ));
        }
    }
    let filter = raw.take_filter(&mut errors);
    let format = match raw.format {
        None => Some(ExportFormat::Ndjson),
        Some(text) => {
            let format = ExportFormat::parse(&text);
            if format.is_none() {
                errors.push(
                    FieldError::new(
                        "enum",
                        vec!["query", "format"],
                        "Input should be 'ndjson' or 'csv'",
                        Value::String(text),
                    )
                    .with_ctx(json!({ "expected": "'ndjson' or 'csv'" })),
                );
            }
            format
        }
    };
    match format {
        Some(format) if errors.is_empty() => Ok((filter, format)),
        _ => Err(errors),
    }
}

/// One CSV record (RFC 4180, CRLF-terminated). A field with a comma, a quote, CR or LF is
/// quoted with its quotes doubled; so is an empty string, which keeps an empty `text` (`""`)
/// apart from a null one (nothing between the last comma and the line end).
///
/// Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` (or TAB or CR) as a formula,
/// and `message_id` and `text` come from whoever sends messages: those two columns get a `'`
/// before such a value, which spreadsheets show as text. A value that itself starts with `'`
/// gets one too, so the rule can be undone exactly: drop one leading `'` from those columns.
/// `from`, `to` and `ts` are validated (`+` and digits, a timestamp) and are written verbatim.
fn csv_row(message: &Message, out: &mut Vec<u8>) {
    csv_field(&defuse_formula(&message.message_id), out);
    out.push(b',');
    csv_field(&message.from, out);
    out.push(b',');
    csv_field(&message.to, out);
    out.push(b',');
    csv_field(message.ts.as_str(), out);
    out.push(b',');
    if let Some(text) = &message.text {
        csv_field(&defuse_formula(text), out);
    }
    out.push(b',');
    csv_field(message.source.as_str(), out);
    out.extend_from_slice(b"\r\n");
}

fn csv_field(value: &str, out: &mut Vec<u8>) {
    let needs_quotes = value.is_empty() || value.contains([',', '"', '\r', '\n']);
    if !needs_quotes {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for piece in value.split_inclusive('"') {
        out.extend_from_slice(piece.as_bytes());
        if piece.ends_with('"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

/// `value`, with a `'` before it when a spreadsheet would read it as a formula (or when it
/// starts with `'`, so that the prefix stays reversible).
fn defuse_formula(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Timestamp;
    use crate::message::loc;

    fn message(id: &str, text: Option<&str>) -> Message {
        Message {
            message_id: id.to_owned(),
            from: "+919876543210".to_owned(),
            to: "+14155550100".to_owned(),
            ts: Timestamp::parse("2025-01-15T10:00:00.5Z").unwrap(),
            text: text.map(str::to_owned),
            source: crate::message::Source::Webhook,
        }
    }

    fn csv_of(message: &Message) -> String {
        let mut out = Vec::new();
        csv_row(message, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let row = |text| csv_of(&message("m1", text));
        assert_eq!(
            row(Some("plain")),
            "m1,+919876543210,+14155550100,2025-01-15T10:00:00.5Z,plain,webhook\r\n"
        );
        assert_eq!(
            row(None),
            "m1,+919876543210,+14155550100,2025-01-15T10:00:00.5Z,,webhook\r\n"
        );
        assert_eq!(
            row(Some("")),
            "m1,+919876543210,+14155550100,2025-01-15T10:00:00.5Z,\"\",webhook\r\n"
        );
        assert!(row(Some("a,b")).ends_with(",\"a,b\",webhook\r\n"));
        assert!(row(Some("say \"hi\"")).ends_with(",\"say \"\"hi\"\"\",webhook\r\n"));
        assert!(row(Some("\"")).ends_with(",\"\"\"\",webhook\r\n"));
        assert!(row(Some("two\nlines\r\n")).ends_with(",\"two\nlines\r\n\",webhook\r\n"));
        assert!(row(Some("héllo 👋")).ends_with(",héllo 👋,webhook\r\n"));
        assert!(csv_of(&message("a\"b,c", None)).starts_with("\"a\"\"b,c\","));
    }

    #[test]
    fn formulas_are_defused_in_id_and_text_only() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "'quoted"] {
            assert_eq!(defuse_formula(risky), format!("'{risky}"));
        }
        for safe in ["1+1", "a=b", "", " =x", "\n=x"] {
            assert_eq!(defuse_formula(safe), safe);
        }
        let row = csv_of(&message("=id", Some("\r=cmd")));
        assert_eq!(
            row,
            "'=id,+919876543210,+14155550100,2025-01-15T10:00:00.5Z,\"'\r=cmd\",webhook\r\n"
        );
    }

    #[test]
    fn ndjson_lines_carry_the_messages_keys_and_source() {
        let mut out = Vec::new();
        ExportFormat::Ndjson
            .encode(&[message("m1", None), message("m2", Some("hi\n"))], &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"message_id\":\"m1\",\"from\":\"+919876543210\",\"to\":\"+14155550100\",\"ts\":\"2025-01-15T10:00:00.5Z\",\"text\":null,\"source\":\"webhook\"}\n\
             {\"message_id\":\"m2\",\"from\":\"+919876543210\",\"to\":\"+14155550100\",\"ts\":\"2025-01-15T10:00:00.5Z\",\"text\":\"hi\\n\",\"source\":\"webhook\"}\n"
        );
    }

    #[test]
    fn the_file_name_carries_the_utc_time() {
        let now = OffsetDateTime::from_unix_timestamp(1_736_935_200).unwrap();
        assert_eq!(
            content_disposition(ExportFormat::Csv, now),
            "attachment; filename=\"messages-20250115T100000Z.csv\""
        );
        assert_eq!(
            content_disposition(ExportFormat::Ndjson, now),
            "attachment; filename=\"messages-20250115T100000Z.ndjson\""
        );
    }

    #[test]
    fn queries_are_judged_like_those_of_messages() {
        let (filter, format) = parse_query("from=+919876543210&q=hi&since=2025-01-15T10:00:00Z").unwrap();
        assert_eq!(format, ExportFormat::Ndjson);
        assert_eq!(filter.from.as_deref(), Some("+919876543210"));
        assert_eq!(parse_query("format=csv").unwrap().1, ExportFormat::Csv);
        let kinds = |query| {
            parse_query(query)
                .unwrap_err()
                .into_iter()
                .map(|error| (error.kind, error.loc))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds("format=CSV&limit=5&offset=0&cursor=x&since=bad"),
            vec![
                ("extra_forbidden", loc(vec!["query", "limit"])),
                ("extra_forbidden", loc(vec!["query", "offset"])),
                ("extra_forbidden", loc(vec!["query", "cursor"])),
                ("value_error", loc(vec!["query", "since"])),
                ("enum", loc(vec!["query", "format"])),
            ]
        );
        assert_eq!(kinds("format="), vec![("enum", loc(vec!["query", "format"]))]);
    }
}
