//! Everything that can stop a bench run.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--url {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot build the request for {0:?}")]
    BadRequest(String),
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("HTTP handshake with {address} failed: {source}")]
    Handshake { address: String, source: hyper::Error },
    #[error("cursor scenario: {0}")]
    Cursor(String),
    #[error("latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
    #[error("latency histogram: {0}")]
    HistogramMerge(#[from] hdrhistogram::AdditionError),
    #[error("a worker task failed: {0}")]
    Task(tokio::task::JoinError),
    #[error("cannot open {database}: {source}")]
    OpenStore { database: String, source: StoreError },
    #[error("seed fills an empty database, and {database} holds {messages} messages")]
    NotEmpty { database: String, messages: u64 },
    #[error("insert failed: {0}")]
    Store(StoreError),
    #[error("generated an invalid timestamp {0:?}")]
    GeneratedTimestamp(String),
    #[error("cannot write the report: {0}")]
    Output(std::io::Error),
}
