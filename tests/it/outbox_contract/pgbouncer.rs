//! The contract through PgBouncer in transaction pooling mode (`queue.pgbouncer = true`): a
//! PgBouncer of each test's own in front of the machine's server, three server connections
//! shared by the outbox's four, a fresh schema per test.

use notifyd::outbox::{Clock, ManualClock};
use notifyd::outbox::{PgOptions, PgOutbox};

use super::{START_MS, Subject, outbox_contract};
use crate::postgres_server::{Bouncer, TestSchema};

async fn open() -> Option<Subject> {
    let schema = TestSchema::create().await?;
    let bouncer = Bouncer::start()?;
    let clock = ManualClock::starting_at(START_MS);
    let outbox = PgOutbox::connect(&PgOptions {
        schema: schema.name.clone(),
        max_connections: 4,
        clock: Clock::Manual(clock.clone()),
        pgbouncer: true,
        ..PgOptions::new(bouncer.url())
    })
    .await
    .unwrap();
    Some(Subject {
        outbox: Box::new(outbox),
        clock,
        // The PgBouncer stops before the schema is dropped.
        _storage: Box::new((bouncer, schema)),
    })
}

outbox_contract!(open);
