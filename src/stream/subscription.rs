//! One open stream: its position in the arrival order, its filter, and where its next
//! messages come from.
//!
//! Catching up, it reads pages from the store after its position; each read comes after a fresh
//! subscription to the feed. Whatever the hub offers on the feed it read from the store first,
//! so a message is either committed before a catch-up read (and in it) or offered on the feed
//! after the subscription that preceded that read (and received). Once a read returns less than
//! a page the stream is caught up and takes the feed, skipping positions it already has: every
//! message once, in order.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};

use super::filter::StreamFilter;
use crate::store::{Arrival, Store, StoreError};
use crate::telemetry::StreamMetrics;

/// Messages read per catch-up query.
const CATCH_UP_PAGE: u32 = 256;

/// Why a stream ended; its client resumes from the last id it received.
#[derive(Debug)]
pub enum Ended {
    /// The client read too slowly and fell a whole feed behind.
    FellBehind,
    /// The service is shutting down.
    ShuttingDown,
    /// A catch-up read failed.
    Store(StoreError),
}

pub struct Subscription {
    store: Arc<dyn Store>,
    feed: broadcast::Receiver<Arc<Arrival>>,
    closing: watch::Receiver<bool>,
    /// The last position this stream has passed, sent or filtered out.
    position: u64,
    filter: StreamFilter,
    /// Matching messages read while catching up, not sent yet.
    backlog: VecDeque<Arc<Arrival>>,
    caught_up: bool,
    metrics: StreamMetrics,
    /// Held while the stream is open: one of `MAX_STREAMS`.
    _slot: OwnedSemaphorePermit,
}

impl Subscription {
    pub(super) fn new(
        store: Arc<dyn Store>,
        feed: broadcast::Receiver<Arc<Arrival>>,
        closing: watch::Receiver<bool>,
        position: u64,
        filter: StreamFilter,
        slot: OwnedSemaphorePermit,
        metrics: StreamMetrics,
    ) -> Subscription {
        metrics.opened();
        Subscription {
            store,
            feed,
            closing,
            position,
            filter,
            backlog: VecDeque::new(),
            caught_up: false,
            metrics,
            _slot: slot,
        }
    }

    /// Where the stream starts: a client that resumes from here misses nothing.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next matching message, or why the stream ends.
    pub async fn next(&mut self) -> Result<Arc<Arrival>, Ended> {
        let next = self.next_or_end().await;
        match &next {
            Ok(_) => self.metrics.event_sent(),
            Err(Ended::FellBehind) => self.metrics.slow_reader_dropped(),
            Err(_) => {}
        }
        next
    }

    async fn next_or_end(&mut self) -> Result<Arc<Arrival>, Ended> {
        loop {
            if *self.closing.borrow() {
                return Err(Ended::ShuttingDown);
            }
            if let Some(arrival) = self.backlog.pop_front() {
                return Ok(arrival);
            }
            if !self.caught_up {
                self.catch_up_page().await?;
                continue;
            }
            let received = tokio::select! {
                received = self.feed.recv() => received,
                _ = self.closing.changed() => return Err(Ended::ShuttingDown),
            };
            match received {
                Ok(arrival) if arrival.position <= self.position => {}
                Ok(arrival) => {
                    self.position = arrival.position;
                    if self.filter.admits(&arrival.message) {
                        return Ok(arrival);
                    }
                }
                Err(RecvError::Lagged(_)) => return Err(Ended::FellBehind),
                Err(RecvError::Closed) => return Err(Ended::ShuttingDown),
            }
        }
    }

    /// Subscribes afresh (what the feed held is read from the store instead), then reads one
    /// page after the position.
    async fn catch_up_page(&mut self) -> Result<(), Ended> {
        self.feed = self.feed.resubscribe();
        let page = self
            .store
            .arrivals_after(self.position, CATCH_UP_PAGE)
            .await
            .map_err(Ended::Store)?;
        self.caught_up = page.len() < CATCH_UP_PAGE as usize;
        for arrival in page {
            self.position = arrival.position;
            if self.filter.admits(&arrival.message) {
                self.backlog.push_back(Arc::new(arrival));
            }
        }
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.metrics.closed();
    }
}
