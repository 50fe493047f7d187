//! The integration tests: one binary, a module per subject.
//!
//! `common` starts the service in-process over a real database on every backend (the
//! `conformance!` macro runs a case once per backend); `child` runs the real binary as a child
//! process. `cargo test --test it -- NAME` runs the tests whose path contains NAME, such as
//! `webhook::` or `postgres`.

#[macro_use]
mod common;
mod child;

mod arrival;
mod bench_tool;
mod bounded_reads;
mod browser;
mod checkpoint;
mod crash;
mod dashboard;
mod docs;
mod export;
mod faults;
mod forward;
mod hardening_properties;
mod health_metrics_errors;
mod hostile;
mod limits;
mod messages;
mod observability;
mod openapi;
mod page;
mod postgres;
mod postgres_tls;
mod process;
mod process_security;
mod properties;
mod providers;
mod read_access;
mod retention;
mod signatures;
mod smoke;
mod stats;
mod stream;
mod structure;
mod tail;
mod webhook;
