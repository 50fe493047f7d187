//! Reading a request body that must be verified before anything else reads it: at most
//! `MAX_BODY_BYTES`, within `BODY_READ_TIMEOUT_MS`, and within one budget of bytes shared by every
//! request, so that many slow or stalled bodies (HTTP/2 carries many per connection) cannot hold
//! more memory than `BODY_BUFFER_BYTES` before their signature is checked.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::config::Limits;

/// The bytes of request bodies held in memory and not yet verified, across all requests.
#[derive(Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    /// How many bytes are free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// A body read in full, holding its share of the budget until it is verified and released.
pub struct HeldBody {
    pub bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

impl HeldBody {
    /// The bytes, once verified: they no longer count against the budget of unverified bytes.
    pub fn release(self) -> Bytes {
        self.bytes
    }
}

/// Reads at most `max_body_bytes` within `body_read_timeout`, taking each chunk's bytes from
/// `budget` as it arrives (waiting, within the timeout, while the budget is spent); a declared or
/// actual length above the limit is refused as soon as seen, before the body is buffered.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<HeldBody, ApiError> {
    let limit = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    tokio::time::timeout(limits.body_read_timeout, collect(body, limit, budget))
        .await
        .map_err(|_| ApiError::BodyTimeout)?
}

async fn collect(mut body: Body, limit: usize, budget: &BodyBudget) -> Result<HeldBody, ApiError> {
    let mut bytes = BytesMut::new();
    let mut share: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ApiError::UnreadableBody)?.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        // At most `limit` bytes, and `limit` fits the budget (see `Limits`), so this ends.
        let more = u32::try_from(data.len()).map_err(|_| ApiError::PayloadTooLarge)?;
        let granted = Arc::clone(&budget.0)
            .acquire_many_owned(more)
            .await
            .map_err(|_| ApiError::UnreadableBody)?;
        match &mut share {
            Some(share) => share.merge(granted),
            None => share = Some(granted),
        }
        bytes.extend_from_slice(&data);
    }
    Ok(HeldBody {
        bytes: bytes.freeze(),
        _share: share,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use futures_util::stream;

    use super::*;

    /// Reads `chunks` as one body of at most `max_body_bytes`, within `timeout`, from `budget`.
    async fn read(
        budget: &BodyBudget,
        chunks: &[&'static [u8]],
        max_body_bytes: usize,
        timeout: Duration,
    ) -> Result<HeldBody, ApiError> {
        let limits = Limits {
            max_body_bytes,
            body_read_timeout: timeout,
            ..Limits::default()
        };
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|chunk| Ok(Bytes::from_static(chunk))).collect();
        read_body(
            Body::from_stream(stream::iter(chunks)),
            &HeaderMap::new(),
            &limits,
            budget,
        )
        .await
    }

    #[tokio::test]
    async fn a_body_holds_its_bytes_of_the_budget_until_released() {
        let budget = BodyBudget::new(100);
        let held = read(&budget, &[b"hello ", b"world"], 64, Duration::from_secs(1))
            .await
            .map_err(|error| error.to_string())
            .expect("read");
        assert_eq!(budget.available(), 89);
        let bytes = held.release();
        assert_eq!(&bytes[..], b"hello world");
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn a_body_waits_while_the_budget_is_spent_and_gives_up_at_its_timeout() {
        let budget = BodyBudget::new(10);
        let first = read(&budget, &[b"0123456789"], 10, Duration::from_secs(1))
            .await
            .map_err(|error| error.to_string())
            .expect("the first fits");
        let second = read(&budget, &[b"x"], 10, Duration::from_millis(100)).await;
        assert!(matches!(second, Err(ApiError::BodyTimeout)));
        drop(first);
        let third = read(&budget, &[b"x"], 10, Duration::from_millis(100)).await;
        assert!(third.is_ok(), "the budget came back");
        drop(third);
        assert_eq!(budget.available(), 10);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_and_gives_its_share_back() {
        let budget = BodyBudget::new(100);
        let refused = read(
            &budget,
            &[b"0123456789", b"0123456789"],
            15,
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(refused, Err(ApiError::PayloadTooLarge)));
        assert_eq!(budget.available(), 100);
    }
}
