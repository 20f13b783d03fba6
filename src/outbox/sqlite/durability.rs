//! When a commit must reach the disk before its callers hear of it.
//!
//! Everything a caller outside the dispatcher is told about (an accepted notification, a
//! cancel, a receipt, a preference) is synced with its commit (`synchronous=FULL`): "accepted"
//! survives a power cut. A claim or a completion is the dispatcher's own bookkeeping: lost to a
//! power cut, its rows come back as they were before it and are sent again, at least once, as
//! after a crash between a send and its commit. Those commits skip the fsync
//! (`synchronous=NORMAL`, which in WAL mode keeps the file consistent and loses only the last
//! commits), and the writer makes them durable within [`SYNC_WITHIN`] of the first of them: the
//! next commit that must be synced does it, or else the writer syncs the WAL file itself. A
//! crash of the process alone loses nothing either way: the kernel holds what was written.
//!
//! During a drain almost every commit is a claim or a completion; syncing each cost about a
//! quarter of the writer thread's CPU (`fsync` in the kernel) and held every claim's rows back
//! until the disk answered.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::clock::{self, Instant};

/// How long a commit may stay unsynced: a power cut repeats at most this much of the
/// dispatcher's sends beyond those in flight.
pub(super) const SYNC_WITHIN: Duration = Duration::from_millis(50);

/// How a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sync {
    /// Synced before anyone is answered (`synchronous=FULL`).
    Now,
    /// Written to the WAL, synced later (`synchronous=NORMAL`).
    Deferred,
}

impl Sync {
    fn pragma(self) -> &'static str {
        match self {
            Sync::Now => "FULL",
            Sync::Deferred => "NORMAL",
        }
    }
}

/// How the next commit must reach the disk: now if one of its writes must be durable when it
/// is answered, or if an earlier commit has waited unsynced for [`SYNC_WITHIN`]; else deferred.
pub(super) fn next_commit(must_sync: bool, unsynced_since: Option<Instant>, now: Instant) -> Sync {
    let overdue =
        unsynced_since.is_some_and(|since| now.saturating_duration_since(since) >= SYNC_WITHIN);
    if must_sync || overdue {
        Sync::Now
    } else {
        Sync::Deferred
    }
}

/// The writer's sync state: the connection's `synchronous` setting, since when commits wait
/// unsynced, and the WAL file it syncs when idle. Changed only here.
pub(super) struct Durability {
    /// What `PRAGMA synchronous` is set to now.
    setting: Sync,
    /// The first commit not yet synced, if any.
    unsynced_since: Option<Instant>,
    wal_path: PathBuf,
    /// Opened at the first idle sync and kept: closing a descriptor of a file drops every
    /// POSIX lock this process holds on it, SQLite's included.
    wal: Option<File>,
    /// The last idle sync failed: the next commit syncs instead, whenever it comes.
    idle_sync_failed: bool,
    /// Points at which every commit so far was on disk: synced commits and idle syncs.
    syncs: Arc<AtomicU64>,
}

impl Durability {
    /// The state of a connection opened with `synchronous=FULL` on the queue file `db_path`.
    pub(super) fn new(db_path: &str, syncs: Arc<AtomicU64>) -> Self {
        Self {
            setting: Sync::Now,
            unsynced_since: None,
            wal_path: PathBuf::from(format!("{db_path}-wal")),
            wal: None,
            idle_sync_failed: false,
            syncs,
        }
    }

    /// Sets the connection up for the next commit; call before its `BEGIN`.
    pub(super) fn before_commit(&mut self, conn: &Connection, must_sync: bool) -> Sync {
        let wanted = next_commit(must_sync, self.unsynced_since, clock::now());
        if wanted != self.setting {
            match conn.pragma_update(None, "synchronous", wanted.pragma()) {
                Ok(()) => self.setting = wanted,
                Err(e) => {
                    // The setting stays as it was: FULL only costs time, NORMAL is caught up
                    // by the idle sync.
                    tracing::warn!(error = %e, "Cannot change the queue's synchronous setting.");
                }
            }
        }
        self.setting
    }

    /// Notes a commit made under the setting [`Self::before_commit`] returned.
    pub(super) fn committed(&mut self, how: Sync) {
        match how {
            Sync::Now => self.synced(),
            Sync::Deferred => {
                self.unsynced_since.get_or_insert_with(clock::now);
            }
        }
    }

    /// Every commit so far is on disk.
    fn synced(&mut self) {
        self.unsynced_since = None;
        self.idle_sync_failed = false;
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// When the writer, idle, must sync the WAL itself; `None` when every commit is on disk
    /// (or the last try failed: then it waits for the next commit, which syncs).
    pub(super) fn sync_by(&self) -> Option<Instant> {
        if self.idle_sync_failed {
            return None;
        }
        self.unsynced_since.map(|since| since + SYNC_WITHIN)
    }

    /// Syncs the WAL file: every commit so far is then on disk. On failure the commits stay
    /// unsynced, and the next commit syncs them.
    pub(super) fn sync_wal(&mut self) {
        if self.unsynced_since.is_none() {
            return;
        }
        let synced = match &self.wal {
            Some(file) => file.sync_data(),
            None => File::open(&self.wal_path).and_then(|file| {
                let synced = file.sync_data();
                self.wal = Some(file);
                synced
            }),
        };
        match synced {
            Ok(()) => self.synced(),
            Err(e) => {
                self.idle_sync_failed = true;
                tracing::error!(error = %e, path = %self.wal_path.display(), "Cannot sync the queue's WAL; the next commit will.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_with_a_write_that_must_be_durable_is_synced_now() {
        let now = clock::now();
        assert_eq!(next_commit(true, None, now), Sync::Now);
        assert_eq!(next_commit(true, Some(now), now), Sync::Now);
    }

    #[test]
    fn a_commit_of_only_claims_and_completions_is_deferred() {
        let now = clock::now();
        assert_eq!(next_commit(false, None, now), Sync::Deferred);
        let recently = now - Duration::from_millis(10);
        assert_eq!(next_commit(false, Some(recently), now), Sync::Deferred);
    }

    #[test]
    fn a_commit_after_commits_unsynced_for_the_whole_bound_is_synced_now() {
        let now = clock::now();
        assert_eq!(next_commit(false, Some(now - SYNC_WITHIN), now), Sync::Now);
        let long_ago = now - Duration::from_secs(3);
        assert_eq!(next_commit(false, Some(long_ago), now), Sync::Now);
    }
}
