//! The live stream of arriving messages (`GET /messages/stream`).
//!
//! One follower of the arrival order per process, the [`hub`], reads what each commit stored,
//! once, and offers it on a feed that every open stream listens to; each [`Subscription`] keeps
//! its own position and filter. A stream that resumes from an id reads what it missed from the
//! store itself, page by page, and then joins the feed (see [`subscription`] for why nothing is
//! skipped or sent twice on the way).
//!
//! Bounded by construction: at most `MAX_STREAMS` streams; the feed is one ring of
//! `STREAM_BUFFER` messages shared by all of them, so memory does not grow with the number of
//! streams or with how far behind they are. A stream that falls a whole ring behind (its client
//! reads too slowly) is ended, and its client resumes from its last id.

mod filter;
mod hub;
mod subscription;

use std::sync::Arc;
use tokio::sync::{Semaphore, broadcast, watch};

pub use crate::config::StreamSettings;
use crate::store::{Arrival, MessageFilter, Store, StoreError};
use crate::telemetry::StreamMetrics;
pub use filter::StreamFilter;
pub use subscription::{Ended, Subscription};

/// Why a stream cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("MAX_STREAMS streams are open")]
    Full,
    /// The id to resume after names a position this database never gave out (another
    /// database's id, or one from before a restore).
    #[error("the id to resume after is past the last stored message")]
    UnknownPosition,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The streams of this process: the hub's feed, the bound on their number, and the signal that
/// ends them all at shutdown.
pub struct StreamHub {
    store: Arc<dyn Store>,
    feed: broadcast::Sender<Arc<Arrival>>,
    slots: Arc<Semaphore>,
    closing: watch::Sender<bool>,
    settings: StreamSettings,
    metrics: StreamMetrics,
}

impl StreamHub {
    /// Starts the hub over `store`; it runs until [`StreamHub::close`].
    pub fn start(store: Arc<dyn Store>, settings: StreamSettings, metrics: StreamMetrics) -> StreamHub {
        let (feed, _) = broadcast::channel(settings.buffer.max(1));
        let (closing, _) = watch::channel(false);
        tokio::spawn(hub::follow(
            Arc::clone(&store),
            feed.clone(),
            store.arrival_signal(),
            closing.subscribe(),
        ));
        StreamHub {
            store,
            feed,
            slots: Arc::new(Semaphore::new(settings.max_streams)),
            closing,
            settings,
            metrics,
        }
    }

    pub fn settings(&self) -> StreamSettings {
        self.settings
    }

    /// A stream of the messages matching `filter` committed after position `after`, or after
    /// the last one committed now when `after` is `None`.
    pub async fn subscribe(
        &self,
        after: Option<u64>,
        filter: &MessageFilter,
    ) -> Result<Subscription, SubscribeError> {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.refused();
            return Err(SubscribeError::Full);
        };
        let last = self.store.last_arrival().await?;
        let start = match after {
            Some(after) if after > last => return Err(SubscribeError::UnknownPosition),
            Some(after) => after,
            None => last,
        };
        Ok(Subscription::new(
            Arc::clone(&self.store),
            self.feed.subscribe(),
            self.closing.subscribe(),
            start,
            StreamFilter::new(filter),
            slot,
            self.metrics.clone(),
        ))
    }

    /// Ends every stream and the hub (the service is shutting down); clients resume elsewhere.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}
