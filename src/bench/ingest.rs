//! `bench ingest`: correctly signed messages to `POST /webhook`, a chosen share of them
//! re-sending an id (and body) sent earlier in the run.

use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::Request;
use hyper::header::HeaderValue;

use super::client::Target;
use super::data::{self, RECIPIENT, Rng, SEED_EPOCH};
use super::report::{IngestCounts, Report};
use super::workers::{self, Workload};
use super::{BenchError, RunArgs};
use crate::signature::{SIGNATURE_HEADER, SigningKey};

/// Duplicate ratios are applied in millionths, in integers, so that counts come out exact.
const PARTS: u64 = 1_000_000;

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// The service's WEBHOOK_SECRET.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,

    /// Connections, each sending one request at a time.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// How many different senders the messages come from.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub senders: u64,

    /// Share of requests (at least 0, below 1) that re-send an id this run sent before.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub duplicate_ratio: f64,

    /// Size of each message's text, in bytes (ASCII).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=4096))]
    pub text_bytes: u16,

    /// Prefix of every message_id (letters, digits, `-`, `_`); a fresh one per run when absent, so
    /// that repeated runs against one database never collide.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,
}

/// Sends the load that `args` describes and reports it.
pub async fn run(args: &IngestArgs) -> Result<Report, BenchError> {
    let target = Target::parse(&args.run.url)?;
    let run_id: Arc<str> = match &args.run_id {
        Some(run_id) => run_id.as_str().into(),
        None => fresh_run_id().into(),
    };
    let plan = Arc::new(Plan {
        target: target.clone(),
        key: SigningKey::new(args.secret.as_bytes()),
        run_id,
        workers: u64::from(args.concurrency),
        senders: args.senders,
        text_bytes: usize::from(args.text_bytes),
        duplicate_parts: ratio_in_parts(args.duplicate_ratio),
    });
    let outcome = workers::drive(&target, args.concurrency, args.run.budget(), |worker| {
        Sender::new(Arc::clone(&plan), u64::from(worker))
    })
    .await?;
    let mut report = Report::new(args.run.label_or("ingest"), &outcome.recorder, outcome.elapsed);
    report.ingest = Some(IngestCounts {
        unique_sent: outcome.workloads.iter().map(|sender| sender.unique).sum(),
        duplicates_sent: outcome.workloads.iter().map(|sender| sender.duplicates).sum(),
    });
    Ok(report)
}

/// What every worker of a run shares.
struct Plan {
    target: Target,
    key: SigningKey,
    run_id: Arc<str>,
    workers: u64,
    senders: u64,
    text_bytes: usize,
    duplicate_parts: u64,
}

/// One worker: its messages are numbered 0, 1, 2… and named `<run>-<worker>-<number>`.
struct Sender {
    plan: Arc<Plan>,
    worker: u64,
    rng: Rng,
    /// Requests sent so far.
    sent: u64,
    /// Distinct messages sent so far; the next new one gets this number.
    unique: u64,
    duplicates: u64,
}

impl Sender {
    fn new(plan: Arc<Plan>, worker: u64) -> Sender {
        Sender {
            plan,
            worker,
            rng: Rng::new(worker),
            sent: 0,
            unique: 0,
            duplicates: 0,
        }
    }

    /// The number of the message to send next: a new one, or one sent before.
    fn pick_message(&mut self) -> u64 {
        let resend = is_duplicate(self.sent, self.plan.duplicate_parts) && self.unique > 0;
        self.sent += 1;
        if resend {
            self.duplicates += 1;
            self.rng.below(self.unique)
        } else {
            self.unique += 1;
            self.unique - 1
        }
    }

    /// The body of message `number` of this worker: the same bytes every time it is asked for.
    fn body(&self, number: u64) -> String {
        let plan = &self.plan;
        // Unique across the workers of the run: sender and timestamp follow it.
        let index = number * plan.workers + self.worker;
        let mut body = String::with_capacity(plan.run_id.len() + plan.text_bytes + 140);
        let _ = write!(
            body,
            r#"{{"message_id":"{}-{}-{number}","from":""#,
            plan.run_id, self.worker
        );
        data::write_sender(&mut body, index % plan.senders);
        let _ = write!(body, r#"","to":"{RECIPIENT}","ts":""#);
        data::write_timestamp(&mut body, SEED_EPOCH.saturating_add_unsigned(index));
        body.push_str(r#"","text":""#);
        data::write_text(&mut body, index, plan.text_bytes, false);
        body.push_str(r#""}"#);
        body
    }
}

impl Workload for Sender {
    fn next_request(&mut self) -> Result<Request<Full<Bytes>>, BenchError> {
        let number = self.pick_message();
        let body = self.body(number);
        let signature = HeaderValue::from_maybe_shared(Bytes::from(self.plan.key.sign(body.as_bytes())))
            .map_err(|_| BenchError::BadRequest("the signature header".to_owned()))?;
        Ok(self
            .plan
            .target
            .post_json("/webhook", Bytes::from(body), (SIGNATURE_HEADER, signature)))
    }
}

/// Whether request `n` (counting from 0) of one connection re-sends an earlier id, so that
/// exactly ⌊k × ratio⌋ of its first k requests do, evenly spread; request 0 never does.
pub fn is_duplicate(n: u64, ratio_parts: u64) -> bool {
    let before = u128::from(n) * u128::from(ratio_parts) / u128::from(PARTS);
    let after = u128::from(n + 1) * u128::from(ratio_parts) / u128::from(PARTS);
    after > before
}

fn ratio_in_parts(ratio: f64) -> u64 {
    (ratio * PARTS as f64).round() as u64
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err("must be at least 0 and below 1".to_owned())
    }
}

fn parse_run_id(text: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("use 1 to 64 letters, digits, '-' or '_'".to_owned())
    }
}

/// `b` and 8 hex digits, e.g. `b1f0c3a9e`.
fn fresh_run_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(8);
    format!("b{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_message;

    fn plan(duplicate_ratio: f64) -> Arc<Plan> {
        Arc::new(Plan {
            target: Target::parse("http://127.0.0.1:9").unwrap(),
            key: SigningKey::new(b"testsecret"),
            run_id: "run1".into(),
            workers: 4,
            senders: 10,
            text_bytes: 64,
            duplicate_parts: ratio_in_parts(duplicate_ratio),
        })
    }

    #[test]
    fn the_duplicate_share_is_exact_and_never_first() {
        let parts = ratio_in_parts(0.2);
        assert!(!is_duplicate(0, parts));
        assert_eq!((0..1_000).filter(|&n| is_duplicate(n, parts)).count(), 200);
        assert_eq!(
            (0..10).filter(|&n| is_duplicate(n, ratio_in_parts(0.25))).count(),
            2
        );
        assert_eq!((0..1_000).filter(|&n| is_duplicate(n, 0)).count(), 0);
        assert_eq!(
            (0..1_000)
                .filter(|&n| is_duplicate(n, ratio_in_parts(0.999)))
                .count(),
            999
        );
    }

    #[test]
    fn duplicates_resend_an_earlier_message_of_the_same_worker() {
        let mut sender = Sender::new(plan(0.5), 1);
        for _ in 0..100 {
            let before = sender.unique;
            let number = sender.pick_message();
            if sender.unique == before {
                assert!(number < before, "re-sent {number} before it was sent");
            } else {
                assert_eq!(number, before);
            }
        }
        assert_eq!(sender.unique, 50);
        assert_eq!(sender.duplicates, 50);
    }

    #[test]
    fn bodies_are_valid_messages_and_the_same_when_resent() {
        let sender = Sender::new(plan(0.0), 3);
        let body = sender.body(7);
        let message = parse_message(body.as_bytes()).unwrap();
        assert_eq!(message.message_id, "run1-3-7");
        // Message 7 of worker 3 of 4 is number 31 of the run; 10 senders.
        assert_eq!(message.from, data::sender(1));
        assert_eq!(message.ts.as_str(), "2025-01-01T00:00:31Z");
        assert_eq!(message.text.as_deref().map(str::len), Some(64));
        assert_eq!(sender.body(7), body);
        assert_ne!(sender.body(8), body);
    }

    #[test]
    fn requests_are_signed_over_the_exact_body() {
        let mut sender = Sender::new(plan(0.0), 0);
        let request = sender.next_request().unwrap();
        let signature = request.headers()[SIGNATURE_HEADER].as_bytes().to_vec();
        let body = sender.body(0);
        assert_eq!(
            SigningKey::new(b"testsecret").verify_hex(&signature, body.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(parse_ratio("0.2"), Ok(0.2));
        assert!(parse_ratio("1").is_err());
        assert!(parse_ratio("-0.1").is_err());
        assert!(parse_ratio("x").is_err());
        assert!(parse_run_id("nightly_01").is_ok());
        assert!(parse_run_id("a\"b").is_err());
        assert!(parse_run_id("").is_err());
        assert!(parse_run_id(&fresh_run_id()).is_ok());
    }
}
