//! Forwarding: every stored message POSTed to each `FORWARD_URL`, signed, retried, durable.
//!
//! - `signing`: the Standard Webhooks headers and the `webhook-id` of a message;
//! - `attempt`: one HTTP attempt and what came of it;
//! - `retry`: when a failed attempt is made again, and when a delivery is failed;
//! - `dispatcher`: one destination's loop on one replica;
//! - `replay`: re-queuing failed deliveries, page by page.
//!
//! A destination is a reader of the arrival order with a cursor, plus the deliveries made from
//! what it read (`crate::store::deliveries`). The store keeps all of that, so a restart loses
//! nothing, and on PostgreSQL the replicas share the work through leases.

mod attempt;
mod dispatcher;
mod replay;
mod retry;
mod signing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::clock::unix_ms;
use crate::config::{ForwardConfigError, ForwardSettings, destination_label};
use crate::store::deliveries::{DeliveryQuery, DeliveryStatus, Destination};
use crate::store::{MessageFilter, Store, StoreError};
use crate::telemetry::{DestinationMetrics, ForwardMetrics, Logger};
use dispatcher::Dispatcher;
use retry::RetryPolicy;

pub use attempt::AttemptResult;
pub use signing::{Signer, webhook_id};

/// How often the pending and failed gauges are read from the store.
const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0}")]
    Config(#[from] ForwardConfigError),
    #[error("cannot build the HTTP client for forwarding: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot register the forwarding destinations: {0}")]
    Store(#[from] StoreError),
}

/// The running forwarding: one dispatcher per destination, and the gauges' refresher.
pub struct Forwarder {
    store: Arc<dyn Store>,
    clock: Clock,
    destinations: Vec<ForwardDestination>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<JoinSet<()>>>,
}

/// A destination, as the API names it.
#[derive(Debug, Clone)]
pub struct ForwardDestination {
    pub id: i64,
    /// The URL without credentials, query or fragment: what metrics, logs and the API show.
    pub label: String,
}

impl Forwarder {
    /// Registers the destinations in the store and starts their dispatchers.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: ForwardSettings,
        metrics: &ForwardMetrics,
        logger: Logger,
        clock: Clock,
    ) -> Result<Forwarder, ForwardError> {
        let sender = attempt::Sender::new(Signer::new(&settings.secret)?, settings.timeout)?;
        let urls: Vec<String> = settings.destinations.iter().map(Url::to_string).collect();
        let registered = store.register_destinations(&urls).await?;
        let owner: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut destinations = Vec::with_capacity(registered.len());
        let mut gauges = Vec::with_capacity(registered.len());
        for (Destination { id, .. }, url) in registered.into_iter().zip(&settings.destinations) {
            let label = destination_label(url);
            let results = AttemptResult::ALL.map(AttemptResult::as_str);
            let destination_metrics = metrics.destination(&label, &results);
            gauges.push((id, destination_metrics.clone()));
            let dispatcher = Dispatcher {
                store: Arc::clone(&store),
                destination_id: id,
                url: url.clone(),
                label: label.clone(),
                sender: sender.clone(),
                policy: RetryPolicy::from_settings(&settings),
                settings: settings.clone(),
                owner: Arc::clone(&owner),
                metrics: destination_metrics,
                logger,
                clock: clock.clone(),
            };
            tasks.spawn(dispatcher.run(stopped.clone()));
            destinations.push(ForwardDestination { id, label });
        }
        tasks.spawn(refresh_gauges(Arc::clone(&store), gauges, clock.clone(), stopped));
        Ok(Forwarder {
            store,
            clock,
            destinations,
            stop,
            tasks: Mutex::new(Some(tasks)),
        })
    }

    pub fn destinations(&self) -> &[ForwardDestination] {
        &self.destinations
    }

    /// The destination labelled `label` (as `GET /deliveries` shows it).
    pub fn destination(&self, label: &str) -> Option<&ForwardDestination> {
        self.destinations
            .iter()
            .find(|destination| destination.label == label)
    }

    /// Queues `message_id` again for every destination; `None` when it is not stored.
    pub async fn redeliver(&self, message_id: &str) -> Result<Option<u64>, StoreError> {
        self.store
            .requeue_message(message_id, &self.chosen(None), self.now_ms())
            .await
    }

    /// Queues again the failed deliveries (to `destination`, or to each configured one) whose
    /// messages match `filter`; returns how many. A destination no longer in `FORWARD_URL` keeps
    /// its failed deliveries: nothing would attempt them.
    pub async fn retry_failed(
        &self,
        filter: &MessageFilter,
        destination: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut requeued = 0;
        for id in self.chosen(destination) {
            requeued += replay::requeue_failed(self.store.as_ref(), filter, id, self.now_ms()).await?;
        }
        Ok(requeued)
    }

    /// Queues again the failed deliveries of one message (to `destination`, or to each
    /// configured one).
    pub async fn retry_failed_of_message(
        &self,
        message_id: &str,
        destination: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut ids = Vec::new();
        for id in self.chosen(destination) {
            let failed = self
                .store
                .list_deliveries(DeliveryQuery {
                    status: Some(DeliveryStatus::Failed),
                    destination: Some(id),
                    message_id: Some(message_id.to_owned()),
                    before: None,
                    // A message has one delivery per destination.
                    limit: 1,
                })
                .await?;
            ids.extend(failed.iter().map(|delivery| delivery.id));
        }
        self.store.requeue_deliveries(ids, self.now_ms()).await
    }

    /// `destination`, or every configured one.
    fn chosen(&self, destination: Option<i64>) -> Vec<i64> {
        match destination {
            Some(id) => vec![id],
            None => self
                .destinations
                .iter()
                .map(|destination| destination.id)
                .collect(),
        }
    }

    /// Stops claiming: the attempts in flight have the dispatcher's `CLOSE_GRACE` to finish from
    /// now, while the rest of the shutdown goes on.
    pub fn begin_close(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until every dispatcher has recorded what finished (see `begin_close`).
    pub async fn close(&self) {
        self.begin_close();
        let tasks = self.tasks.lock().ok().and_then(|mut tasks| tasks.take());
        if let Some(mut tasks) = tasks {
            while tasks.join_next().await.is_some() {}
        }
    }

    fn now_ms(&self) -> i64 {
        unix_ms(self.clock.now())
    }
}

/// Reads the pending and failed counts every [`GAUGE_REFRESH`] (never per scrape).
async fn refresh_gauges(
    store: Arc<dyn Store>,
    gauges: Vec<(i64, DestinationMetrics)>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match store.delivery_totals().await {
            Ok(totals) => {
                let now_ms = unix_ms(clock.now());
                for (id, metrics) in &gauges {
                    let found = totals.iter().find(|totals| totals.destination == *id);
                    let (pending, failed, oldest) = found.map_or((0, 0, None), |totals| {
                        (totals.pending, totals.failed, totals.oldest_pending_ms)
                    });
                    let age_ms = oldest.map_or(0, |oldest| (now_ms - oldest).max(0));
                    metrics.waiting(
                        pending,
                        failed,
                        Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)),
                    );
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot read the forwarding backlog for the gauges"),
        }
        tokio::select! {
            () = tokio::time::sleep(GAUGE_REFRESH) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dispatcher::millis;
    use super::*;

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_secs(2)), 2_000);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
