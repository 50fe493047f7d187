//! The one follower of the arrival order per process: after each commit it reads the new
//! messages once and offers them on the feed, in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::store::{Arrival, Store};

/// Messages read per query.
const PAGE: u32 = 512;

/// How often the hub reads even without a signal: a lost announcement (PostgreSQL's listener
/// reconnecting) delays messages by at most this.
const CATCH_UP_EVERY: Duration = Duration::from_secs(2);

/// Follows the arrival order from the position `signal` holds now until `closing` is set.
///
/// While no stream listens, it reads nothing: it moves its position to the last one known to
/// be committed, read *before* it looks for listeners. A stream that starts listening after
/// that look reads everything up to there from the store itself, so nothing falls between.
pub async fn follow(
    store: Arc<dyn Store>,
    feed: broadcast::Sender<Arc<Arrival>>,
    mut signal: watch::Receiver<u64>,
    mut closing: watch::Receiver<bool>,
) {
    let mut position = *signal.borrow_and_update();
    loop {
        let woken_by_timer = tokio::select! {
            changed = signal.changed() => match changed {
                Ok(()) => false,
                Err(_) => return,
            },
            () = tokio::time::sleep(CATCH_UP_EVERY) => true,
            _ = closing.changed() => return,
        };
        let mut committed = *signal.borrow_and_update();
        if woken_by_timer && feed.receiver_count() == 0 {
            // Other replicas' commits may have gone unannounced: learn how far they got.
            if let Ok(last) = store.last_arrival().await {
                committed = committed.max(last);
            }
        }
        if feed.receiver_count() == 0 {
            position = position.max(committed);
            continue;
        }
        position = hand_out(store.as_ref(), &feed, position).await;
    }
}

/// Offers every message after `position` on the feed; returns the last position offered.
async fn hand_out(store: &dyn Store, feed: &broadcast::Sender<Arc<Arrival>>, mut position: u64) -> u64 {
    loop {
        match store.arrivals_after(position, PAGE).await {
            Ok(page) => {
                let whole_page = page.len() == PAGE as usize;
                for arrival in page {
                    position = arrival.position;
                    // No listener left is no error: the next one reads from the store.
                    let _ = feed.send(Arc::new(arrival));
                }
                if !whole_page {
                    return position;
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "the stream hub cannot read new messages; trying again");
                return position;
            }
        }
    }
}
