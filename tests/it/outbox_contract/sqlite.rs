//! The contract on SQLite: a real queue file in a temp dir.

use notifyd::outbox::{Clock, ManualClock};
use notifyd::outbox::{SqliteOptions, SqliteOutbox};

use super::{START_MS, Subject, outbox_contract};

async fn open() -> Option<Subject> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(START_MS);
    let outbox = SqliteOutbox::open(&SqliteOptions {
        clock: Clock::Manual(clock.clone()),
        ..SqliteOptions::new(dir.path().join("queue.db"))
    })
    .unwrap();
    Some(Subject {
        outbox: Box::new(outbox),
        clock,
        _storage: Box::new(dir),
    })
}

outbox_contract!(open);
