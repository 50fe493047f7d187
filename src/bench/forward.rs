//! `bench forward`: how fast the service forwards, measured at a receiver of its own that answers
//! 204 at once. Start the service with `FORWARD_URL=http://<--listen>/` first.
//!
//! 1. Drain: the receiver holds every request while `--backlog` messages are ingested (so the
//!    service has them all waiting), then answers them all; deliveries per second are counted
//!    from the release to the last first delivery. With `--hold false` it answers at once, and
//!    the count runs from the start of the ingest: forwarding and ingest share the cores.
//! 2. Lag: messages are sent at `--rate` per second for `--duration`; each one's lag is the
//!    time from the service's answer to the POST (as the client received it) until its first
//!    delivery, 0 when the delivery came first. The time from sending the POST is reported too:
//!    the two bound the lag from the acknowledgement from below and above.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::Args;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{BenchError, IngestArgs, RunArgs, ingest, parse_duration};
use crate::signature::{SIGNATURE_HEADER, SigningKey};

#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// The service's WEBHOOK_SECRET.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,

    /// Where the receiver listens: the service's FORWARD_URL must point here.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,

    /// Messages ingested while the receiver holds its answers, then drained.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub backlog: u64,

    /// Messages per second in the lag phase (0 skips it).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,

    /// How long the lag phase sends: `20s`, `1m`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Hold the answers while the backlog is ingested (`false`: answer at once, so forwarding
    /// runs beside the ingest and competes with it for the cores).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub hold: bool,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct ForwardReport {
    pub drain: DrainReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagReport>,
}

#[derive(Debug, Serialize)]
pub struct DrainReport {
    pub messages: u64,
    pub ingest_requests_per_sec: f64,
    /// Distinct messages delivered per second, from the release to the last one.
    pub deliveries_per_sec: f64,
    pub drain_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct LagReport {
    pub rate: u32,
    pub sent: u64,
    pub delivered: u64,
    /// From the POST's answer reaching the client to the delivery.
    pub from_answer_ms: Percentiles,
    /// From the POST's sending to the delivery.
    pub from_send_ms: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Percentiles {
        values.sort_by(f64::total_cmp);
        Percentiles {
            p50: percentile(&values, 0.50),
            p90: percentile(&values, 0.90),
            p99: percentile(&values, 0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// When one lag-phase message was sent and when its answer came.
#[derive(Debug, Clone, Copy)]
struct Sent {
    sent: Instant,
    answered: Instant,
}

/// What the receiver saw: when each message id first arrived.
struct Arrivals {
    first: Mutex<HashMap<String, Instant>>,
    release: watch::Receiver<bool>,
}

#[derive(serde::Deserialize)]
struct Forwarded {
    message_id: String,
}

async fn receive(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> StatusCode {
    let mut release = arrivals.release.clone();
    let _ = release.wait_for(|released| *released).await;
    if let Ok(forwarded) = serde_json::from_slice::<Forwarded>(&body)
        && let Ok(mut first) = arrivals.first.lock()
    {
        first.entry(forwarded.message_id).or_insert_with(Instant::now);
    }
    StatusCode::NO_CONTENT
}

/// How long to wait for the last deliveries once everything is sent.
const SETTLE: Duration = Duration::from_secs(60);

pub async fn run(args: &ForwardArgs) -> Result<ForwardReport, BenchError> {
    let (release, released) = watch::channel(!args.hold);
    let arrivals = Arc::new(Arrivals {
        first: Mutex::default(),
        release: released,
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| BenchError::Connect {
            address: args.listen.to_string(),
            source,
        })?;
    let app = Router::new().fallback(receive).with_state(Arc::clone(&arrivals));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let drain = drain(args, &arrivals, &release).await?;
    let lag = if args.rate == 0 {
        None
    } else {
        Some(lag(args, &arrivals).await?)
    };
    server.abort();
    Ok(ForwardReport { drain, lag })
}

async fn drain(
    args: &ForwardArgs,
    arrivals: &Arrivals,
    release: &watch::Sender<bool>,
) -> Result<DrainReport, BenchError> {
    let ingest_args = IngestArgs {
        run: RunArgs {
            url: args.url.clone(),
            duration: None,
            requests: Some(args.backlog),
            format: super::Format::Json,
            label: Some("forward-backlog".to_owned()),
        },
        secret: args.secret.clone(),
        concurrency: 64,
        senders: 1_000,
        duplicate_ratio: 0.0,
        text_bytes: 64,
        run_id: Some(format!("fwd{}", std::process::id())),
    };
    let started = Instant::now();
    let ingested = ingest::run(&ingest_args).await?;
    // Held, the drain starts now; not held, it started with the ingest.
    let released_at = if args.hold { Instant::now() } else { started };
    let _ = release.send(true);
    let last = wait_for_deliveries(arrivals, args.backlog, released_at).await;
    let drain_seconds = last.duration_since(released_at).as_secs_f64();
    let delivered = delivered_count(arrivals);
    Ok(DrainReport {
        messages: args.backlog,
        ingest_requests_per_sec: ingested.requests_per_sec,
        deliveries_per_sec: per_second(delivered, drain_seconds),
        drain_seconds,
    })
}

fn delivered_count(arrivals: &Arrivals) -> u64 {
    arrivals.first.lock().map_or(0, |first| first.len() as u64)
}

/// Waits until `count` distinct messages arrived (or [`SETTLE`] passed without a new one);
/// returns the time of the last first arrival.
async fn wait_for_deliveries(arrivals: &Arrivals, count: u64, since: Instant) -> Instant {
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    loop {
        let now = delivered_count(arrivals);
        if now >= count {
            break;
        }
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    arrivals
        .first
        .lock()
        .ok()
        .and_then(|first| first.values().max().copied())
        .unwrap_or(since)
}

#[allow(clippy::cast_precision_loss)]
fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Sends `--rate` messages a second and measures each one's lag to its delivery.
async fn lag(args: &ForwardArgs, arrivals: &Arrivals) -> Result<LagReport, BenchError> {
    let drained = delivered_count(arrivals);
    let client = crate::outbound::client();
    let key = SigningKey::new(args.secret.as_bytes());
    let acked: Arc<Mutex<HashMap<String, Sent>>> = Arc::default();
    let total = u64::from(args.rate) * args.duration.as_secs().max(1);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let url = format!("{}/webhook", args.url.trim_end_matches('/'));
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..total {
        ticks.tick().await;
        let id = format!("lag{}-{n}", std::process::id());
        let body = format!(
            r#"{{"message_id":"{id}","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"lag"}}"#
        );
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, key.sign(body.as_bytes()))
            .body(body);
        let acked = Arc::clone(&acked);
        sends.spawn(async move {
            let sent = Instant::now();
            if let Ok(response) = request.send().await
                && response.status().is_success()
                && let Ok(mut acked) = acked.lock()
            {
                let answered = Instant::now();
                acked.insert(id, Sent { sent, answered });
            }
        });
    }
    while sends.join_next().await.is_some() {}
    let sent = acked.lock().map_or(0, |acked| acked.len() as u64);
    wait_for_deliveries(arrivals, drained + sent, Instant::now()).await;
    let lags = lags_of(&acked, arrivals);
    Ok(LagReport {
        rate: args.rate,
        sent,
        delivered: lags.len() as u64,
        from_answer_ms: Percentiles::of(lags.iter().map(|(answer, _)| *answer).collect()),
        from_send_ms: Percentiles::of(lags.iter().map(|(_, send)| *send).collect()),
    })
}

/// The lags of every acknowledged message that arrived, from its answer and from its sending,
/// in milliseconds.
fn lags_of(acked: &Mutex<HashMap<String, Sent>>, arrivals: &Arrivals) -> Vec<(f64, f64)> {
    let (Ok(acked), Ok(first)) = (acked.lock(), arrivals.first.lock()) else {
        return Vec::new();
    };
    let millis = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1_000.0;
    acked
        .iter()
        .filter_map(|(id, sent)| {
            let arrived = *first.get(id)?;
            // A delivery can reach the receiver before the POST's answer reaches the client.
            Some((millis(sent.answered, arrived), millis(sent.sent, arrived)))
        })
        .collect()
}

/// The value at `quantile` (0 to 1) of sorted `values` (nearest rank).
fn percentile(values: &[f64], quantile: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
