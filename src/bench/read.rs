//! `bench read`: one read scenario against a service, typically over a database filled by
//! `bench seed` (whose senders, timestamps and marker word the scenarios assume).

use std::sync::Arc;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::Full;
use hyper::{Request, StatusCode, Uri};
use serde::{Deserialize, Deserializer};

use super::client::{self, Target};
use super::data::{self, MARKER, Rng};
use super::report::Report;
use super::workers::{self, Workload};
use super::{BenchError, RunArgs};

/// The `since` scenario asks for about this many of the newest seeded rows.
const SINCE_TAIL_ROWS: u64 = 100;

/// Tries at the `cursor` scenario's starting page before giving up.
const CURSOR_START_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `GET /messages`: the first page, no filter.
    Messages,
    /// `GET /messages?order=desc`: the newest page, no filter (what the web page shows first).
    Newest,
    /// `GET /messages?from=`: one of the seeded senders, at random.
    From,
    /// `GET /messages?since=`: a timestamp near the end of the seeded range.
    Since,
    /// `GET /messages?q=`: a term on about 0.5% of the seeded rows.
    Q,
    /// `GET /messages?offset=`: a deep page by offset.
    Offset,
    /// `GET /messages?cursor=`: pages that follow `next_cursor`, from the `--offset` page on.
    Cursor,
    /// `GET /stats`.
    Stats,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Messages => "messages",
            Scenario::Newest => "newest",
            Scenario::From => "from",
            Scenario::Since => "since",
            Scenario::Q => "q",
            Scenario::Offset => "offset",
            Scenario::Cursor => "cursor",
            Scenario::Stats => "stats",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub run: RunArgs,

    #[arg(long, value_enum, default_value_t = Scenario::Messages)]
    pub scenario: Scenario,

    /// Connections, each sending one request at a time.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Senders in the seeded database: `from` picks one of them at random.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub senders: u64,

    /// Messages in the seeded database: `since` asks for about the newest 100 of them.
    #[arg(long, default_value_t = 1_000_000)]
    pub seeded_messages: u64,

    /// The `q` scenario's search term.
    #[arg(long, default_value = MARKER)]
    pub term: String,

    /// The `offset` scenario's offset, and the depth at which the `cursor` scenario starts.
    #[arg(long, default_value_t = 900_000)]
    pub offset: u64,

    /// Sent as `Authorization: Bearer …` when the service protects its reads with `API_TOKEN`.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// Runs the scenario that `args` names and reports it.
pub async fn run(args: &ReadArgs) -> Result<Report, BenchError> {
    let target = Target::parse(&args.run.url)?.with_api_token(args.api_token.as_deref())?;
    let label = args.run.label_or(args.scenario.name());
    let budget = args.run.budget();
    let (recorder, elapsed) = match args.scenario {
        Scenario::Cursor => {
            let start = client::path(offset_path(args.offset))?;
            workers::drive(&target, args.concurrency, budget, |_| {
                CursorWalk::new(target.clone(), start.clone())
            })
            .await?
            .measured()
        }
        scenario => {
            let paths = Arc::new(PathSource::new(scenario, args)?);
            workers::drive(&target, args.concurrency, budget, |worker| Reader {
                target: target.clone(),
                paths: Arc::clone(&paths),
                rng: Rng::new(u64::from(worker)),
            })
            .await?
            .measured()
        }
    };
    Ok(Report::new(label, &recorder, elapsed))
}

/// Where the scenarios other than `cursor` send their requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSource {
    /// The same path every time.
    Fixed(Uri),
    /// `/messages?from=` one of this many seeded senders.
    RandomSender(u64),
}

impl PathSource {
    pub fn new(scenario: Scenario, args: &ReadArgs) -> Result<PathSource, BenchError> {
        let fixed = match scenario {
            Scenario::From => return Ok(PathSource::RandomSender(args.senders)),
            Scenario::Messages => "/messages".to_owned(),
            Scenario::Newest => "/messages?order=desc".to_owned(),
            Scenario::Since => {
                let since = data::seeded_timestamp(args.seeded_messages.saturating_sub(SINCE_TAIL_ROWS));
                messages_query("since", &since)
            }
            Scenario::Q => messages_query("q", &args.term),
            Scenario::Offset | Scenario::Cursor => offset_path(args.offset),
            Scenario::Stats => "/stats".to_owned(),
        };
        Ok(PathSource::Fixed(client::path(fixed)?))
    }

    fn next(&self, rng: &mut Rng) -> Result<Uri, BenchError> {
        match self {
            PathSource::Fixed(path) => Ok(path.clone()),
            PathSource::RandomSender(senders) => {
                client::path(messages_query("from", &data::sender(rng.below(*senders))))
            }
        }
    }
}

/// `/messages?NAME=VALUE`, the value percent-encoded (so `+` arrives as `+`).
fn messages_query(name: &str, value: &str) -> String {
    let mut path = format!("/messages?{name}=");
    path.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    path
}

fn offset_path(offset: u64) -> String {
    format!("/messages?offset={offset}")
}

struct Reader {
    target: Target,
    paths: Arc<PathSource>,
    rng: Rng,
}

impl Workload for Reader {
    fn next_request(&mut self) -> Result<Request<Full<Bytes>>, BenchError> {
        Ok(self.target.get(self.paths.next(&mut self.rng)?))
    }
}

/// Walks `/messages` by `next_cursor`: first, untimed, the page at the start offset;
/// then page after page, timed; back to the first cursor after the last page.
struct CursorWalk {
    target: Target,
    start_path: Uri,
    start_tries: u32,
    first_cursor: Option<String>,
    cursor: Option<String>,
}

impl CursorWalk {
    fn new(target: Target, start_path: Uri) -> CursorWalk {
        CursorWalk {
            target,
            start_path,
            start_tries: 0,
            first_cursor: None,
            cursor: None,
        }
    }

    fn start_page(&mut self, status: StatusCode, body: &Bytes) -> Result<(), BenchError> {
        if status != StatusCode::OK {
            return Err(BenchError::Cursor(format!(
                "{} answered {status}",
                self.start_path
            )));
        }
        match next_cursor(body)? {
            Some(cursor) => {
                self.first_cursor = Some(cursor.clone());
                self.cursor = Some(cursor);
                Ok(())
            }
            None => Err(BenchError::Cursor(format!(
                "{} is the last page (next_cursor is null): the database holds fewer rows than the offset",
                self.start_path
            ))),
        }
    }
}

impl Workload for CursorWalk {
    fn setup(&mut self) -> Option<Result<Request<Full<Bytes>>, BenchError>> {
        if self.first_cursor.is_some() {
            return None;
        }
        self.start_tries += 1;
        if self.start_tries > CURSOR_START_TRIES {
            return Some(Err(BenchError::Cursor(format!(
                "no answer from {} after {CURSOR_START_TRIES} tries",
                self.start_path
            ))));
        }
        Some(Ok(self.target.get(self.start_path.clone())))
    }

    fn next_request(&mut self) -> Result<Request<Full<Bytes>>, BenchError> {
        let cursor = self.cursor.as_deref().unwrap_or_default();
        Ok(self.target.get(client::path(messages_query("cursor", cursor))?))
    }

    fn observe(&mut self, status: StatusCode, body: &Bytes) -> Result<(), BenchError> {
        if self.first_cursor.is_none() {
            return self.start_page(status, body);
        }
        if status == StatusCode::OK {
            self.cursor = next_cursor(body)?.or_else(|| self.first_cursor.clone());
        }
        Ok(())
    }
}

/// The `next_cursor` of a `/messages` answer: `Some` to go on, `None` on the last page, and an
/// error when the field is missing (a service without cursor support).
pub fn next_cursor(body: &[u8]) -> Result<Option<String>, BenchError> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default, deserialize_with = "present")]
        next_cursor: Option<Option<String>>,
    }
    fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(deserializer).map(Some)
    }
    let page: Page = serde_json::from_slice(body).map_err(|error| {
        BenchError::Cursor(format!("the /messages answer is not the expected JSON: {error}"))
    })?;
    page.next_cursor.ok_or_else(|| {
        BenchError::Cursor(
            "the /messages answer has no next_cursor field: this service does not offer cursors".to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Format;

    fn args(scenario: Scenario) -> ReadArgs {
        ReadArgs {
            run: RunArgs {
                url: "http://127.0.0.1:9".to_owned(),
                duration: None,
                requests: Some(1),
                format: Format::Text,
                label: None,
            },
            scenario,
            concurrency: 1,
            senders: 10_000,
            seeded_messages: 1_000_000,
            term: MARKER.to_owned(),
            offset: 900_000,
            api_token: None,
        }
    }

    fn path(scenario: Scenario) -> String {
        let source = PathSource::new(scenario, &args(scenario)).unwrap();
        source.next(&mut Rng::new(1)).unwrap().to_string()
    }

    #[test]
    fn each_scenario_asks_for_its_page() {
        assert_eq!(path(Scenario::Messages), "/messages");
        assert_eq!(path(Scenario::Newest), "/messages?order=desc");
        assert_eq!(path(Scenario::Since), "/messages?since=2025-01-12T13%3A45%3A00Z");
        assert_eq!(path(Scenario::Q), "/messages?q=zebra");
        assert_eq!(path(Scenario::Offset), "/messages?offset=900000");
        assert_eq!(path(Scenario::Stats), "/stats");
    }

    #[test]
    fn from_picks_a_seeded_sender_with_its_plus_encoded() {
        let source = PathSource::new(Scenario::From, &args(Scenario::From)).unwrap();
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let path = source.next(&mut rng).unwrap().to_string();
            let digits = path.strip_prefix("/messages?from=%2B9199").unwrap();
            assert_eq!(digits.len(), 8);
            assert!(digits.parse::<u64>().unwrap() < 10_000);
        }
    }

    #[test]
    fn next_cursor_tells_absent_from_null() {
        assert_eq!(
            next_cursor(br#"{"data":[],"next_cursor":"abc"}"#).unwrap(),
            Some("abc".to_owned())
        );
        assert_eq!(next_cursor(br#"{"data":[],"next_cursor":null}"#).unwrap(), None);
        let missing = next_cursor(br#"{"data":[],"total":0}"#).unwrap_err();
        assert!(missing.to_string().contains("no next_cursor field"), "{missing}");
        assert!(next_cursor(b"not json").is_err());
    }

    #[test]
    fn the_cursor_walk_starts_untimed_then_follows_and_wraps() {
        let target = Target::parse("http://127.0.0.1:9").unwrap();
        let mut walk = CursorWalk::new(target, Uri::from_static("/messages?offset=10"));
        let start = walk.setup().unwrap().unwrap();
        assert_eq!(start.uri(), "/messages?offset=10");
        walk.observe(StatusCode::OK, &Bytes::from_static(br#"{"next_cursor":"c1"}"#))
            .unwrap();
        assert!(walk.setup().is_none());
        assert_eq!(walk.next_request().unwrap().uri(), "/messages?cursor=c1");
        walk.observe(StatusCode::OK, &Bytes::from_static(br#"{"next_cursor":"c+2"}"#))
            .unwrap();
        assert_eq!(walk.next_request().unwrap().uri(), "/messages?cursor=c%2B2");
        walk.observe(StatusCode::OK, &Bytes::from_static(br#"{"next_cursor":null}"#))
            .unwrap();
        assert_eq!(walk.next_request().unwrap().uri(), "/messages?cursor=c1");
    }

    #[test]
    fn a_start_page_without_cursors_is_a_clear_error() {
        let target = Target::parse("http://127.0.0.1:9").unwrap();
        let mut walk = CursorWalk::new(target, Uri::from_static("/messages?offset=10"));
        let error = walk
            .observe(StatusCode::OK, &Bytes::from_static(br#"{"data":[],"total":5}"#))
            .unwrap_err();
        assert!(error.to_string().contains("does not offer cursors"), "{error}");
    }
}
