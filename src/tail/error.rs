//! Why the tail stops: the errors that retrying cannot fix.

use reqwest::{StatusCode, Url};

use super::sse::LineTooLong;

/// What ends the tail: a mistake in its arguments, a refusal by the service, or stdout closed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("--{flag} {url}: {why}")]
    BadUrl {
        flag: &'static str,
        url: String,
        why: String,
    },
    #[error("cannot build an HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot make the request (check --token and --after): {0}")]
    Request(String),
    #[error("the service answered {status}: {body}")]
    Refused { status: StatusCode, body: String },
    #[error("{url} answered {content_type:?}, not an event stream: is --url the service's base URL?")]
    NotAStream { url: Url, content_type: String },
    #[error(transparent)]
    LineTooLong(#[from] LineTooLong),
    #[error("cannot write to stdout: {0}")]
    Output(std::io::Error),
}

/// The innermost cause of an error: "Connection refused (os error 111)" says more than the
/// layers of "error sending request" around it.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
