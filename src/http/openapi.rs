//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, built from the handlers'
//! `#[utoipa::path]` attributes, the answer types' schemas and the validation constants, so a
//! change to any of them changes the document. `tests/openapi.rs` checks that every route the
//! router serves is documented with its methods, and `tests/schemathesis/run.sh` checks the
//! real answers against the document.
//!
//! The document holds no data, so it is open whatever `API_TOKEN` says.

use std::sync::{Arc, LazyLock};

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::{ErrorDetail, ValidationErrors};
use super::middleware::MAX_REQUEST_ID_LEN;
use super::schemas::WebhookBody;
use super::{deliveries, export, health, message, messages, page, stats, stream, timeline, webhook};
use crate::app::AppState;
use crate::message::{FieldError, Message};
use crate::sources::{twilio, whatsapp};
use crate::store::{SenderCount, SourceCounts, Stats};

pub const PATH: &str = "/openapi.json";

/// The name of the bearer scheme that guards the reads when `API_TOKEN` is set.
pub const API_TOKEN_SCHEME: &str = "api_token";

const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// The shared 401 answer, under `components/responses`.
const NOT_AUTHENTICATED: &str = "NotAuthenticated";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "webhook-inbox",
        description = "Self-hosted webhook ingestion: signed messages in, stored exactly once, \
            queried fast.\n\nEvery error answer is JSON with a `detail` field: a string, or for a \
            validation failure (422) a list of FastAPI-style entries. An unknown path answers 404 \
            `{\"detail\":\"Not Found\"}` and a known path with another method 405 \
            `{\"detail\":\"Method Not Allowed\"}` (both under `components/responses`, with \
            `InternalError`, the 500 of a bug). Every answer carries `X-Request-Id` (the \
            caller's, when it sent a short printable one). A `GET` route also answers `HEAD`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        webhook::receive,
        whatsapp::route::handshake,
        whatsapp::route::receive,
        twilio::route::receive,
        messages::list,
        export::export,
        stream::stream,
        message::show,
        stats::stats,
        timeline::timeline,
        deliveries::list,
        deliveries::redeliver,
        deliveries::retry_failed,
        health::live,
        health::ready,
        super::metrics::metrics,
        openapi_json,
    ),
    components(
        schemas(Message, WebhookBody, ErrorDetail, ValidationErrors, FieldError, Stats, SenderCount, SourceCounts),
    ),
    modifiers(&Completion),
)]
struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<Document> = LazyLock::new(|| {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
});

pub fn document() -> &'static Document {
    &DOCUMENT
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = PATH,
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
pub(super) async fn openapi_json() -> Json<&'static Document> {
    Json(document())
}

/// What the attributes cannot say: the bearer scheme, the page's files (one per embedded
/// asset), and the `X-Request-Id` header of every operation and answer.
struct Completion;

impl Modify for Completion {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_TOKEN_SCHEME,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Required on the message reads when the server runs with `API_TOKEN`; \
                 without it they are open.",
                    ))
                    .build(),
            ),
        );
        for (name, description, detail) in [
            ("NotFound", "No such route.", "Not Found"),
            (
                "MethodNotAllowed",
                "The path is served, but not for this method.",
                "Method Not Allowed",
            ),
            (
                "InternalError",
                "Any route, should a handler fail unexpectedly (a bug): the cause goes to the log.",
                "internal server error",
            ),
        ] {
            let mut response = error_response(description, detail);
            add_request_id_header(&mut response);
            components.responses.insert(name.to_owned(), response.into());
        }
        components
            .responses
            .insert(NOT_AUTHENTICATED.to_owned(), not_authenticated_response().into());
        page::document(&mut document.paths);
        let behind_the_token = SecurityRequirement::new(API_TOKEN_SCHEME, Vec::<String>::new());
        for item in document.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                add_request_id(operation);
                if operation
                    .security
                    .iter()
                    .flatten()
                    .any(|required| *required == behind_the_token)
                {
                    operation.responses.responses.insert(
                        "401".to_owned(),
                        RefOr::Ref(Ref::from_response_name(NOT_AUTHENTICATED)),
                    );
                }
            }
        }
    }
}

/// The 401 of every operation behind [`API_TOKEN_SCHEME`], added where the scheme is required.
fn not_authenticated_response() -> Response {
    let mut response = error_response(
        "`API_TOKEN` is set and the request lacks `Authorization: Bearer <token>`.",
        "not authenticated",
    );
    let challenge = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("`Bearer`"))
        .build();
    response.headers.insert("WWW-Authenticate".to_owned(), challenge);
    add_request_id_header(&mut response);
    response
}

/// An answer whose body is `{"detail": detail}`.
fn error_response(description: &str, detail: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name(ErrorDetail::name()))))
                .example(Some(json!({ "detail": detail })))
                .build(),
        )
        .build()
}

/// The `X-Request-Id` answer header. The request header of the same name is not a documented
/// parameter: it is optional and a value the server does not take (empty, too long, not
/// printable ASCII) is replaced rather than refused, so no value of it is invalid.
fn add_request_id(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            add_request_id_header(response);
        }
    }
}

fn add_request_id_header(response: &mut Response) {
    let header = HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_REQUEST_ID_LEN))
                .pattern(Some("^[!-~]+$")),
        )
        .description(Some(
            "The request's id, as logged: the request's own `X-Request-Id` when it is 1 to 128 \
             printable ASCII characters, else a new random one.",
        ))
        .build();
    response.headers.insert(REQUEST_ID_HEADER.to_owned(), header);
}
