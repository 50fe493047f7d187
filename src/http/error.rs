//! Every error answer of the API, turned into a response in this one place.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::message::FieldError;
use crate::store::StoreError;

/// The body of every error answer except a validation failure.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"detail": "invalid signature"}))]
pub struct ErrorDetail {
    pub detail: String,
}

/// The body of a 422: one entry per broken rule, FastAPI style.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrors {
    #[schema(min_items = 1)]
    pub detail: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid signature")]
    InvalidSignature,
    #[error("not authenticated")]
    NotAuthenticated,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("request body could not be read")]
    UnreadableBody,
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("Not Found")]
    NotFound,
    #[error("message not found")]
    MessageNotFound,
    #[error("verification failed")]
    VerificationFailed,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("webhook secret not configured")]
    SecretNotConfigured,
    #[error("storage unavailable")]
    StorageUnavailable(#[source] StoreError),
    #[error("query timed out")]
    QueryTimeout,
    #[error("too many streams")]
    TooManyStreams,
    #[error("forwarding is not configured")]
    ForwardingNotConfigured,
    #[error("internal server error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidSignature | ApiError::NotAuthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound | ApiError::MessageNotFound => StatusCode::NOT_FOUND,
            ApiError::VerificationFailed => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ForwardingNotConfigured => StatusCode::CONFLICT,
            ApiError::SecretNotConfigured
            | ApiError::StorageUnavailable(_)
            | ApiError::QueryTimeout
            | ApiError::TooManyStreams => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// A header the answer needs besides its body.
    fn extra_header(&self) -> Option<(HeaderName, &'static str)> {
        match self {
            // RFC 6750 §3: a 401 for a missing or wrong bearer token names the scheme.
            ApiError::NotAuthenticated => Some((header::WWW_AUTHENTICATE, "Bearer")),
            // The body was not read to its end (RFC 9112 §9.6): the connection is closed after
            // this answer, and a client must not send another request on it.
            ApiError::BodyTimeout | ApiError::PayloadTooLarge => Some((header::CONNECTION, "close")),
            // A stream's slot frees when another client leaves; a few seconds is a fair wait.
            ApiError::TooManyStreams => Some((header::RETRY_AFTER, "5")),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Timeout => ApiError::QueryTimeout,
            other => ApiError::StorageUnavailable(other),
        }
    }
}

/// The cause of a 5xx answer, left in the response extensions for the access log line; the
/// client sees only the generic `detail`.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause = match &self {
            ApiError::StorageUnavailable(cause) => Some(cause.to_string()),
            ApiError::QueryTimeout => Some(StoreError::Timeout.to_string()),
            ApiError::Internal(cause) => Some(cause.clone()),
            _ => None,
        };
        let extra_header = self.extra_header();
        let mut response = match self {
            ApiError::Validation(errors) => {
                (status, Json(ValidationErrors { detail: errors })).into_response()
            }
            other => (
                status,
                Json(ErrorDetail {
                    detail: other.to_string(),
                }),
            )
                .into_response(),
        };
        if let Some((name, value)) = extra_header {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        response
    }
}
