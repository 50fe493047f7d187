//! webhook-inbox: receives signed messages on `POST /webhook`, stores each exactly once, and
//! serves them back.
//!
//! [`app::AppState`] is built once from the settings (the composition root); [`http::router`]
//! builds the whole HTTP API from it, so tests can drive it in-process; [`server::serve`] runs
//! it on a listener until a shutdown signal. `docs/architecture.md` gives the tour.

#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod forward;
pub mod http;
pub mod message;
pub mod outbound;
pub mod retention;
pub mod server;
pub mod signature;
pub mod sources;
pub mod store;
pub mod stream;
pub mod tail;
pub mod telemetry;
