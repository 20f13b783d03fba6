//! The few connections the hot path (claims, completions, group commits) keeps to itself,
//! outside sqlx's pool.
//!
//! sqlx's pool checks every connection given back to it with a round trip of its own (it
//! always does; `after_release` cannot turn it off): on this path one more round trip, and one
//! more wake-up of a server process, per claim, per completion batch and per group commit. The
//! check guards against a connection left half-way through an exchange or inside a
//! transaction; here a connection is put back only after an operation that ended well, and one
//! that failed or whose operation was dropped half-way is closed with it, so it never is.
//!
//! When every dedicated connection is busy (or there are none: through PgBouncer, whose
//! operations go through [`super::pool::Pool`]), the caller uses the pool as before: no
//! operation waits for one of these.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::round_trips::RoundTrips;
use crate::clock::{self, Instant};

/// An open connection and when its last operation ended.
struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// A fixed set of connections, each used by one operation at a time.
pub(super) struct Dedicated {
    connect: PgConnectOptions,
    slots: Vec<Arc<Mutex<Option<Idle>>>>,
    trips: RoundTrips,
    /// How long connecting may take before the operation answers unavailable.
    connect_timeout: Duration,
    /// A connection idle this long is checked before use (it may have died with a server
    /// restart); one in steady use is not.
    check_idle_after: Duration,
}

impl std::fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// One dedicated connection in use. Dropped without [`Taken::keep`], it is closed.
pub(super) struct Taken {
    slot: OwnedMutexGuard<Option<Idle>>,
    conn: PgConnection,
}

impl Taken {
    /// The connection.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Puts the connection back for the next operation: only after one that ended well.
    pub(super) fn keep(mut self) {
        *self.slot = Some(Idle {
            conn: self.conn,
            since: clock::now(),
        });
    }

    /// Puts back the connection taken, if one was (the pool takes care of its own).
    pub(super) fn keep_any(taken: Option<Self>) {
        if let Some(taken) = taken {
            taken.keep();
        }
    }
}

impl Dedicated {
    /// `slots` connections (opened on first use) to `connect`.
    pub(super) fn new(
        connect: PgConnectOptions,
        slots: usize,
        trips: RoundTrips,
        connect_timeout: Duration,
        check_idle_after: Duration,
    ) -> Self {
        Self {
            connect,
            slots: (0..slots).map(|_| Arc::new(Mutex::new(None))).collect(),
            trips,
            connect_timeout,
            check_idle_after,
        }
    }

    /// A free dedicated connection, opened or checked first if need be; `None` when every one
    /// is busy (the caller uses the pool). A connection that cannot be opened is an error, as
    /// the pool's would be.
    pub(super) async fn take(&self) -> Result<Option<Taken>, sqlx::Error> {
        let Some(mut slot) = self
            .slots
            .iter()
            .find_map(|s| s.clone().try_lock_owned().ok())
        else {
            return Ok(None);
        };
        if let Some(idle) = slot.take() {
            let mut conn = idle.conn;
            if clock::now() - idle.since < self.check_idle_after {
                return Ok(Some(Taken { slot, conn }));
            }
            self.trips.one();
            if conn.ping().await.is_ok() {
                return Ok(Some(Taken { slot, conn }));
            }
            // Dead (a server restart): a new one below.
        }
        let conn = match tokio::time::timeout(self.connect_timeout, self.connect.connect()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        Ok(Some(Taken { slot, conn }))
    }

    /// Closes every idle connection (one in use is closed when its operation ends).
    pub(super) async fn close(&self) {
        for slot in &self.slots {
            if let Some(idle) = slot.lock().await.take() {
                let _ = idle.conn.close().await;
            }
        }
    }
}
