//! Re-queuing failed deliveries, a page at a time: a replay of any range holds one page in
//! memory, never the range.

use crate::store::{MessageFilter, Store, StoreError};
use crate::stream::StreamFilter;

/// Failed deliveries read and re-queued per step.
const REPLAY_PAGE: u32 = 500;

/// Makes the failed deliveries to `destination` whose messages `filter` admits pending again,
/// due at `now_ms`; returns how many.
pub async fn requeue_failed(
    store: &dyn Store,
    filter: &MessageFilter,
    destination: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let admits = StreamFilter::new(filter);
    let mut after = 0;
    let mut requeued = 0;
    loop {
        let page = store.failed_page(destination, after, REPLAY_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(requeued);
        };
        after = last.id;
        let full = page.len() == REPLAY_PAGE as usize;
        let ids: Vec<i64> = page
            .into_iter()
            .filter(|failed| admits.admits(&failed.message))
            .map(|failed| failed.id)
            .collect();
        if !ids.is_empty() {
            requeued += store.requeue_deliveries(ids, now_ms).await?;
        }
        if !full {
            return Ok(requeued);
        }
    }
}
