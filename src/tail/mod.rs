//! `webhook-inbox tail`: follows `GET /messages/stream` in a terminal, as `stripe listen` does.
//!
//! One line per message on stdout (a readable line, or NDJSON with `--json`); everything else
//! (connected, reconnecting, forwarded) on stderr, so stdout can be piped. The tail keeps the
//! last id the stream gave, the id-only first frame included, and when the connection is
//! refused, lost or ended, or the service answers 5xx, it reconnects after a short backoff with
//! `Last-Event-ID` set to that id: the service then sends exactly the messages after it, so
//! none is missed or printed twice. A 4xx answer (a missing token, a bad filter or id) cannot
//! be fixed by retrying: it ends the tail with the service's answer.

mod error;
mod forward;
mod print;
mod sse;

use std::borrow::Cow;
use std::time::Duration;

use clap::Args;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};
use serde_json::Value;

pub use error::TailError;
use error::root_cause;
use forward::Forwarder;
use print::{status, write_line};
use sse::{Frame, FrameReader, Item};

/// The first pause before reconnecting; each failed attempt doubles it, up to [`LONGEST_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(250);
const LONGEST_DELAY: Duration = Duration::from_secs(5);
/// The most a `Retry-After` header may make the tail wait.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream sends at least a heartbeat every 15 s; three missed ones mean a dead connection
/// (a peer that vanished without closing it), which is then dropped and resumed.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// The most of an error answer's body that is read and shown.
const EXCERPT_BYTES: usize = 2048;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The service's base URL, without `/messages/stream`; `http://` only.
    #[arg(long, env = "INBOX_URL", default_value = "http://localhost:8000")]
    pub url: String,

    /// Sent as `Authorization: Bearer …` when the service protects its reads.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Print each message as its JSON object, one per line (NDJSON), instead of a readable line.
    #[arg(long)]
    pub json: bool,

    /// Only messages from this exact sender.
    #[arg(long)]
    pub from: Option<String>,

    /// Only messages whose text contains this, in any case.
    #[arg(long)]
    pub q: Option<String>,

    /// Only messages from this source: `webhook`, `whatsapp` or `twilio`.
    #[arg(long)]
    pub source: Option<String>,

    /// Only messages whose `ts` is at or after this instant (`2025-01-15T00:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,

    /// Start after this id (an `id:` the stream gave); absent: from now on.
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,

    /// POST each message's JSON to this URL, once (no retries), and print the answer's status on
    /// stderr.
    #[arg(long, value_name = "URL")]
    pub forward_to: Option<String>,
}

/// Follows the stream until a fatal error, or until stdout is closed (`tail | head`), which
/// ends the tail quietly.
pub async fn run(args: TailArgs) -> Result<(), TailError> {
    let request = StreamRequest::new(&args)?;
    let forwarder = args
        .forward_to
        .as_deref()
        .map(|url| Forwarder::new(http_url("forward-to", url)?))
        .transpose()?;
    let mut follower = Follower {
        last_id: args.after,
        json: args.json,
        forwarder,
    };
    match follower.follow(&request).await {
        TailError::Output(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        error => Err(error),
    }
}

/// The request for the stream, the same on every connection but for `Last-Event-ID`.
struct StreamRequest {
    client: reqwest::Client,
    url: Url,
    token: Option<String>,
}

impl StreamRequest {
    fn new(args: &TailArgs) -> Result<StreamRequest, TailError> {
        let mut url = http_url("url", &args.url)?;
        url.path_segments_mut()
            .map_err(|()| TailError::BadUrl {
                flag: "url",
                url: args.url.clone(),
                why: "it cannot take a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(["messages", "stream"]);
        url.set_query(None);
        url.set_fragment(None);
        let filters = [
            ("from", &args.from),
            ("q", &args.q),
            ("source", &args.source),
            ("since", &args.since),
        ];
        let filters: Vec<(&str, &str)> = filters
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_deref()?)))
            .collect();
        if !filters.is_empty() {
            url.query_pairs_mut().extend_pairs(filters);
        }
        let client = crate::outbound::client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(TailError::Client)?;
        Ok(StreamRequest {
            client,
            url,
            token: args.token.clone().filter(|token| !token.is_empty()),
        })
    }

    async fn send(&self, after: Option<&str>) -> reqwest::Result<Response> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await
    }
}

/// Why a connection ended (or never began) when the tail should try again.
struct Interruption {
    reason: String,
    /// The service accepted the stream, so the next failure starts the backoff afresh.
    was_connected: bool,
    /// What the service's `Retry-After` asked for.
    retry_after: Option<Duration>,
}

impl Interruption {
    fn before_connecting(reason: String) -> Interruption {
        Interruption {
            reason,
            was_connected: false,
            retry_after: None,
        }
    }

    fn after_connecting(reason: String) -> Interruption {
        Interruption {
            was_connected: true,
            ..Interruption::before_connecting(reason)
        }
    }
}

/// The pause before each attempt to reconnect: 250 ms, doubling up to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: FIRST_DELAY }
    }

    fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(LONGEST_DELAY);
        delay
    }
}

/// Where the tail is in the stream, and where each message goes.
struct Follower {
    /// The last id the stream gave: each reconnection resumes after it.
    last_id: Option<String>,
    json: bool,
    forwarder: Option<Forwarder>,
}

impl Follower {
    /// Connects, reads, and reconnects, until an error that retrying cannot fix.
    async fn follow(&mut self, request: &StreamRequest) -> TailError {
        let mut backoff = Backoff::new();
        loop {
            let interruption = match self.follow_once(request).await {
                Ok(interruption) => interruption,
                Err(error) => return error,
            };
            if interruption.was_connected {
                backoff.reset();
            }
            let delay = backoff
                .next_delay()
                .max(interruption.retry_after.unwrap_or_default());
            status(&format!(
                "{}; reconnecting in {} ms",
                interruption.reason,
                delay.as_millis()
            ));
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: opened, then read until it ends.
    async fn follow_once(&mut self, request: &StreamRequest) -> Result<Interruption, TailError> {
        let response = match request.send(self.last_id.as_deref()).await {
            Ok(response) => response,
            // A header that cannot be sent will not become sendable by retrying.
            Err(error) if error.is_builder() => return Err(TailError::Request(root_cause(&error))),
            Err(error) => {
                return Ok(Interruption::before_connecting(format!(
                    "cannot reach {}: {}",
                    request.url,
                    root_cause(&error)
                )));
            }
        };
        let code = response.status();
        if !code.is_success() {
            let retry_after = retry_after(&response);
            let body = body_excerpt(response).await;
            if !is_transient(code) {
                return Err(TailError::Refused { status: code, body });
            }
            return Ok(Interruption {
                retry_after,
                ..Interruption::before_connecting(format!("the service answered {code}: {body}"))
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Err(TailError::NotAStream {
                url: request.url.clone(),
                content_type,
            });
        }
        status(&match &self.last_id {
            Some(id) => format!("connected to {}, resuming after id {id}", request.url),
            None => format!("connected to {}, from now on", request.url),
        });
        self.read(response).await
    }

    /// Reads one stream to its end, delivering each message.
    async fn read(&mut self, mut response: Response) -> Result<Interruption, TailError> {
        let mut frames = FrameReader::new();
        let mut farewell = None;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    let reason = farewell.unwrap_or_else(|| "the stream ended".to_owned());
                    return Ok(Interruption::after_connecting(reason));
                }
                Err(error) => {
                    return Ok(Interruption::after_connecting(format!(
                        "the stream broke off: {}",
                        root_cause(&error)
                    )));
                }
            };
            for item in frames.feed(&chunk)? {
                match item {
                    Item::Frame(frame) => self.take(frame).await?,
                    // The service says why it is about to end a stream; heartbeats say nothing.
                    Item::Comment(comment) => {
                        if let Some(reason) = comment.strip_prefix("closed:") {
                            farewell = Some(format!(
                                "the service closed the stream:{}",
                                print::one_line(reason)
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Delivers a frame's message, if it holds one, then moves past its id.
    async fn take(&mut self, frame: Frame) -> Result<(), TailError> {
        let is_message = matches!(frame.event.as_deref(), None | Some("message"));
        if let Some(data) = frame.data.as_deref().filter(|_| is_message) {
            self.deliver(data).await?;
        }
        if let Some(id) = frame.id {
            self.last_id = Some(id);
        }
        Ok(())
    }

    async fn deliver(&self, data: &str) -> Result<(), TailError> {
        let message: Option<Value> = serde_json::from_str(data).ok();
        let line = if self.json {
            print::json_line(data)
        } else {
            Some(Cow::Owned(print::readable_line(data, message.as_ref())))
        };
        match line {
            Some(line) => write_line(&line)?,
            None => status("an event's data is not JSON; it is not printed"),
        }
        if let Some(forwarder) = &self.forwarder {
            let message_id = message
                .as_ref()
                .and_then(|message| message.get("message_id"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            forwarder.forward(data, &print::one_line(message_id)).await;
        }
        Ok(())
    }
}

/// 5xx, and the two 4xx that mean "later": worth another attempt. Any other answer is not.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` in seconds (the service sends it with 503 `too many streams`), bounded.
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(LONGEST_RETRY_AFTER))
}

/// The beginning of an error answer's body, on one line.
async fn body_excerpt(mut response: Response) -> String {
    let mut body = Vec::new();
    while body.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&body);
    match text.trim() {
        "" => "(no body)".to_owned(),
        text => print::one_line(text).into_owned(),
    }
}

/// `value` as an `http://` URL, or why it is not one.
fn http_url(flag: &'static str, value: &str) -> Result<Url, TailError> {
    let bad = |why: String| TailError::BadUrl {
        flag,
        url: value.to_owned(),
        why,
    };
    let url = Url::parse(value).map_err(|error| bad(error.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad(
            "only http:// is supported: this binary has no TLS client".to_owned()
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use reqwest::StatusCode;

    use super::{Backoff, StreamRequest, TailArgs, is_transient};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TailArgs,
    }

    fn args(line: &[&str]) -> TailArgs {
        let mut argv = vec!["tail"];
        argv.extend_from_slice(line);
        match Wrapper::try_parse_from(argv) {
            Ok(wrapper) => wrapper.args,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_backoff_doubles_from_250_ms_to_5_s_and_starts_again_after_a_connection() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..7).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn the_stream_url_carries_the_filters_encoded() {
        let request = StreamRequest::new(&args(&[
            "--url",
            "http://127.0.0.1:9000/inbox/",
            "--from",
            "+919876543210",
            "--q",
            "Grüße & co",
            "--source",
            "whatsapp",
        ]))
        .expect("a good URL");
        assert_eq!(
            request.url.as_str(),
            "http://127.0.0.1:9000/inbox/messages/stream?from=%2B919876543210&q=Gr%C3%BC%C3%9Fe+%26+co&source=whatsapp"
        );
        let plain = StreamRequest::new(&args(&["--url", "http://localhost:8000"])).expect("a good URL");
        assert_eq!(plain.url.as_str(), "http://localhost:8000/messages/stream");
    }

    #[test]
    fn only_http_urls_are_taken() {
        for bad in ["https://inbox.example.com", "localhost:8000", "not a url"] {
            assert!(StreamRequest::new(&args(&["--url", bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_errors_are_retried_and_other_refusals_are_not() {
        for code in [500, 502, 503, 408, 429] {
            assert!(
                is_transient(StatusCode::from_u16(code).expect("a code")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 422, 301] {
            assert!(
                !is_transient(StatusCode::from_u16(code).expect("a code")),
                "{code}"
            );
        }
    }
}
