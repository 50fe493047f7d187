//! webhook-inbox: receives signed messages on `POST /webhook`, stores each exactly once, and
//! serves them back. [`app`] builds the whole HTTP API from an [`AppState`], so tests can drive
//! it in-process; [`serve`] runs it on a listener until a shutdown signal.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod memory;
pub mod message;
pub mod retention;
pub mod server;
pub mod signature;
pub mod store;
pub mod telemetry;

pub use http::{AppState, Credentials, router as app};
pub use server::{Limits, SHUTDOWN_GRACE, serve};
