//! notifyd: a notification daemon that never loses one.
//!
//! The path of a notification: [`api`] or [`cli`] validate a [`submission`] into a
//! [`outbox::NewNotification`], the [`outbox`] makes it durable, the [`dispatch`] loop claims it
//! and hands it to its channel (from `notifyd-channels`), and writes the outcome back.

pub mod ack_link;
pub mod api;
pub mod bench;
pub mod bench_history;
pub mod channel_stats;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod dispatch;
pub mod inbound;
pub mod ingest;
pub mod json_bounds;
pub mod metrics;
pub mod outbox;
pub mod per_minute;
pub mod policy;
pub mod recipients;
pub mod registry;
pub mod rules;
pub mod search;
pub mod signed_link;
pub mod submission;
pub mod systemd;
pub mod templates;
