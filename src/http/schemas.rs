//! The message schemas of the OpenAPI document, built in code from the constants the validator
//! uses, so the document and the rules cannot disagree.

use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::message::{
    MAX_MESSAGE_ID_CHARS, MAX_TEXT_CHARS, MSISDN_PATTERN, Message, NO_NUL_PATTERN, TIMESTAMP_PATTERN,
};

/// A string schema with `pattern`.
fn patterned(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// The fields of a message, with the rules `POST /webhook` checks; `text` may be left out of a request,
/// while an answer always has it (null when none was sent).
fn message_schema(text_required: bool) -> Schema {
    let text = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX_TEXT_CHARS))
        .pattern(Some(NO_NUL_PATTERN));
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "message_id",
            patterned(NO_NUL_PATTERN)
                .min_length(Some(1))
                .max_length(Some(MAX_MESSAGE_ID_CHARS))
                .examples([json!("m1")]),
        )
        .property(
            "from",
            patterned(MSISDN_PATTERN).examples([json!("+919876543210")]),
        )
        .property("to", patterned(MSISDN_PATTERN).examples([json!("+14155550100")]))
        .property(
            "ts",
            patterned(TIMESTAMP_PATTERN)
                .description(Some(
                    "UTC, `Z` only, up to 9 fraction digits, a real calendar instant; returned \
                     verbatim, ordered as an instant.",
                ))
                .examples([json!("2025-01-15T10:00:00Z")]),
        )
        .property("text", text.examples([json!("Hello")]))
        .required("message_id")
        .required("from")
        .required("to")
        .required("ts");
    if text_required {
        object = object.required("text");
    }
    object.into()
}

impl PartialSchema for Message {
    fn schema() -> RefOr<Schema> {
        RefOr::T(message_schema(true))
    }
}

impl ToSchema for Message {}

/// The body of `POST /webhook`; unknown fields are ignored.
pub enum WebhookBody {}

impl PartialSchema for WebhookBody {
    fn schema() -> RefOr<Schema> {
        RefOr::T(message_schema(false))
    }
}

impl ToSchema for WebhookBody {}
