//! `GET /stats`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use super::error::{ErrorDetail, ValidationErrors};
use super::query::{RawParams, take_source};
use crate::app::AppState;
use crate::store::Stats;

pub const PATH: &str = "/stats";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(stats))
}

/// `source`, for the OpenAPI document.
pub enum StatsParams {}

impl utoipa::IntoParams for StatsParams {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![super::query::source_parameter(
            "The figures of this source's messages alone. Empty: of every message.",
        )]
    }
}

/// Counts kept at insert time. With `source`, the figures of that source's messages alone
/// (its senders are counted from its rows when other sources hold messages too).
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    params(StatsParams),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The figures.", body = Stats),
        (status = 422, description = "An unknown `source`.", body = ValidationErrors),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn stats(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    let mut errors = Vec::new();
    let source = take_source(
        &mut RawParams::read(query.as_deref().unwrap_or_default()).source,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(Json(state.store.stats(source).await?))
}
