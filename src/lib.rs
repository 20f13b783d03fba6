//! notifyd: a notification daemon that never loses one.
//!
//! The path of a notification: the API or the CLI validate a submission into an
//! [`outbox::NewNotification`], the [`outbox`] makes it durable, the dispatch loop claims it
//! and hands it to its channel (from `notifyd-channels`), and writes the outcome back.
//!
//! Every module is private to the crate; what is exported here is the small facade the binary
//! and the integration tests need (ARCHITECTURE.md, "The facade"). `unreachable_pub` keeps the
//! rest `pub(crate)`, so a new export is a decision made in this file.
#![deny(unreachable_pub)]

mod ack_link;
mod api;
mod bench;
mod bench_history;
mod channel_stats;
mod cli;
mod clock;
mod config;
mod console;
mod daemon;
mod dispatch;
mod http;
mod inbound;
mod ingest;
mod ingest_counters;
mod json_bounds;
mod listener;
mod metrics;
mod model;
pub mod outbox;
mod per_minute;
mod policy;
mod recipients;
mod registry;
mod rules;
mod search;
mod signed_link;
mod submission;
mod systemd;
mod templates;
mod window;

/// The command line (`serve`, `send`, `list`, …): all the binary runs.
pub use cli::main;

/// The whole daemon in this process: queue, channels, dispatcher, API; reload and stop.
pub use daemon::Daemon;

/// The configuration file, loaded and checked, and its `[server]` part.
pub use config::{Config, ServerConfig};

/// The channels built from the configuration.
pub use registry::Registry;

/// The HTTP API as a router over its state, for serving it in process.
pub use api::{MAX_RECEIPT_BYTES, router};
pub use http::{AppState, Live};

/// Every route the API serves, as the OpenAPI document lists them.
pub use api::routes::{Route, all as api_routes};

/// Where a listener is bound (TCP address or Unix socket).
pub use listener::Endpoint;

/// One notification as the API accepts it.
pub use submission::Submission;

/// The deepest JSON nesting a request or a plain-SQL row may have.
pub use json_bounds::MAX_DEPTH as MAX_JSON_DEPTH;

/// Twilio's request signature, as a receipt callback must carry it.
pub use inbound::twilio_signature;

/// Wall time now, in Unix milliseconds: the queue's clock.
pub use clock::now_ms;

pub use model::DeliverBetween;
/// A recipient's stored preferences and the time windows they are written in.
pub use recipients::Preferences;
pub use window::WindowSpec;

/// Why a channel is held (paused), as shared between daemons.
pub use model::HoldReason;

/// The shared rate limit's reservation rule, which the PostgreSQL statement must agree with.
pub mod rate_limit {
    pub use crate::outbox::limits::{Granted, Pace, ahead_of, reserve, schedule};
}
