//! Integration tests: the daemon in-process or as a child process, a real SQLite file or the
//! machine's PostgreSQL, real HTTP receivers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The daemon runs on real time here: waiting for it and timing it reads the real clock.
#![allow(clippy::disallowed_methods)]

mod api;
mod arbitrary_rows;
mod chaos;
mod cluster_limits;
mod console;
mod crash;
mod dedup;
mod delivery;
mod digest;
mod enqueue_outside;
mod escalation;
mod fuzz;
mod history;
mod hostile_rows;
mod ingest;
mod limits;
mod module_graph;
mod openapi;
mod outbox_contract;
mod pg_faults;
mod pg_upkeep;
mod postgres_server;
mod preferences;
mod providers;
mod receipts;
mod reload;
mod scale_out;
mod service;
mod support;
mod webdriver;
