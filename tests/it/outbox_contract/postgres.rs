//! The contract on PostgreSQL: the machine's server, a fresh schema per test, dropped after it
//! (see `postgres_server.rs`; without a server a developer's run skips, CI fails).

use notifyd::outbox::{Clock, ManualClock};
use notifyd::outbox::{PgOptions, PgOutbox};

use super::{START_MS, Subject, outbox_contract};
use crate::postgres_server::{TestSchema, server_url};

async fn open() -> Option<Subject> {
    let schema = TestSchema::create().await?;
    let clock = ManualClock::starting_at(START_MS);
    let outbox = PgOutbox::connect(&PgOptions {
        schema: schema.name.clone(),
        max_connections: 4,
        clock: Clock::Manual(clock.clone()),
        ..PgOptions::new(server_url())
    })
    .await
    .unwrap();
    Some(Subject {
        outbox: Box::new(outbox),
        clock,
        _storage: Box::new(schema),
    })
}

outbox_contract!(open);
