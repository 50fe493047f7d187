//! One attempt at one delivery: the message's JSON POSTed to the destination, signed afresh,
//! within `FORWARD_TIMEOUT_MS`, and what came of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::redirect::{Attempt, Policy};
use reqwest::{Client, StatusCode, Url};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::signing::Signer;
use crate::message::Message;

/// The most redirects followed for one attempt.
const MAX_REDIRECTS: usize = 5;

/// How much of a refusing answer's body is kept as the delivery's error.
const ERROR_BODY_CHARS: usize = 200;

const USER_AGENT_VALUE: &str = concat!("webhook-inbox/", env!("CARGO_PKG_VERSION"));

/// How an attempt ended, as `forward_attempts_total{result}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx answer.
    Delivered,
    /// Any other answer.
    Refused,
    /// No answer within `FORWARD_TIMEOUT_MS`.
    Timeout,
    /// No connection, or it broke.
    Unreachable,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 4] = [
        AttemptResult::Delivered,
        AttemptResult::Refused,
        AttemptResult::Timeout,
        AttemptResult::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Refused => "refused",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Unreachable => "unreachable",
        }
    }
}

/// What one attempt found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    pub result: AttemptResult,
    pub status_code: Option<u16>,
    /// Why it failed, for `GET /deliveries`; `None` when delivered.
    pub error: Option<String>,
    /// The wait a 429 or 503 asked for.
    pub retry_after: Option<Duration>,
    pub took: Duration,
}

/// Makes attempts: one HTTP client (its connections kept alive between attempts) and the signer.
#[derive(Clone)]
pub struct Sender {
    client: Client,
    signer: Arc<Signer>,
}

impl Sender {
    pub fn new(signer: Signer, timeout: Duration) -> Result<Sender, reqwest::Error> {
        let client = crate::outbound::client_builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(Policy::custom(same_origin_only))
            .user_agent(USER_AGENT_VALUE)
            .build()?;
        Ok(Sender {
            client,
            signer: Arc::new(signer),
        })
    }

    /// POSTs `message` to `url` under `webhook_id` (see `signing::webhook_id`), signed as of
    /// `now_unix_secs`.
    pub async fn attempt(
        &self,
        url: &Url,
        message: &Message,
        webhook_id: &str,
        now_unix_secs: u64,
    ) -> Attempted {
        let started = Instant::now();
        let body = forwarded_body(message);
        let signed = self.signer.sign(webhook_id, now_unix_secs, &body);
        let sent = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", signed.id)
            .header("webhook-timestamp", signed.timestamp)
            .header("webhook-signature", signed.signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Attempted {
                result: AttemptResult::Delivered,
                status_code: Some(response.status().as_u16()),
                error: None,
                retry_after: None,
                took: started.elapsed(),
            },
            Ok(response) => refused(response, started).await,
            Err(error) => failed_to_send(&error, started),
        }
    }
}

/// The forwarded JSON: the Part A fields and `source`.
fn forwarded_body(message: &Message) -> Vec<u8> {
    serde_json::to_vec(&message.with_source()).unwrap_or_default()
}

async fn refused(response: reqwest::Response, started: Instant) -> Attempted {
    let status = response.status();
    let retry_after = if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, OffsetDateTime::now_utc()))
    } else {
        None
    };
    let mut error = if status.is_redirection() {
        format!(
            "the destination answered {status}: redirects are followed only within its origin, and only 307 and 308"
        )
    } else {
        format!("the destination answered {status}")
    };
    if let Ok(text) = response.text().await {
        let snippet: String = text.trim().chars().take(ERROR_BODY_CHARS).collect();
        if !snippet.is_empty() {
            error.push_str(": ");
            error.push_str(&snippet);
        }
    }
    Attempted {
        result: AttemptResult::Refused,
        status_code: Some(status.as_u16()),
        error: Some(error),
        retry_after,
        took: started.elapsed(),
    }
}

fn failed_to_send(error: &reqwest::Error, started: Instant) -> Attempted {
    let (result, error) = if error.is_timeout() {
        (
            AttemptResult::Timeout,
            "no answer within FORWARD_TIMEOUT_MS".to_owned(),
        )
    } else {
        (AttemptResult::Unreachable, describe(error))
    };
    Attempted {
        result,
        status_code: None,
        error: Some(error),
        retry_after: None,
        took: started.elapsed(),
    }
}

/// The error and its causes, without the URL (it may hold credentials).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// `Retry-After` as seconds or as an HTTP date; `None` when it is neither.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

/// Follows a redirect only to the same origin (scheme, host and port) and only when it keeps
/// the method and the body (307, 308): a 301, 302 or 303 would turn the POST into a GET
/// without the message, and its 2xx would look like a delivery.
fn same_origin_only(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let keeps_the_body = matches!(
        attempt.status(),
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
    );
    let same_origin = attempt
        .previous()
        .first()
        .is_some_and(|first| first.origin() == attempt.url().origin());
    if keeps_the_body && same_origin && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let now = datetime!(2026-12-07 22:00:00 UTC);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Mon, 07 Dec 2026 22:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Dec 2026 21:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
