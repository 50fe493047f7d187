//! Read access: with `API_TOKEN` set, the read endpoints want `Authorization: Bearer <token>`;
//! anything else is 401 `{"detail":"not authenticated"}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::AppState;

/// Lets a request through when no token is configured or when it carries the token.
pub async fn require_api_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match &state.credentials.api_token {
        Some(token) if !token.admits(request.headers()) => ApiError::NotAuthenticated.into_response(),
        _ => next.run(request).await,
    }
}
