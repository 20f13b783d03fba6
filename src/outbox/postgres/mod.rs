//! The PostgreSQL outbox: any number of daemons share one queue in one database.
//!
//! Everything lives in a schema of its own (`queue.schema`, the connections' `search_path`), so
//! notifyd can share a database. Enqueues go through one batching task (group commit): the
//! notifications of every request waiting are inserted by one statement in one transaction, and
//! each caller is answered after that COMMIT. Claims lock rows with `FOR UPDATE SKIP LOCKED`, so
//! daemons never claim the same row while its lease runs; completions are fenced by the lease
//! token and the owner. The rules are the queue model's ([`completion`], [`fallback`],
//! [`transition`], [`receipt`], [`sweep`]); this module only stores.

mod completions;
mod dedicated;
mod history;
mod limits;
mod pool;
mod recipients;
mod round_trips;
mod sql;
mod stored;
#[cfg(test)]
mod test_queue;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgConnection, Row};
use tokio::sync::{mpsc, oneshot, watch};

use self::pool::Pool;
use super::completion::RowChange;
use super::fallback::FallbackParent;
use super::*;
use crate::outbox::sqlite::stored::Unreadable;
use crate::recipients::Preferences;
use crate::rules::escalation::{self, AckPlan, AckTarget, StepParent, StepTrigger};
use completions::CompletionBatch;
use dedicated::{Dedicated, Taken};
pub(crate) use round_trips::RoundTrips;

/// Requests waiting for the enqueue task at most; more wait to be sent.
const ENQUEUE_QUEUE: usize = 8192;
/// Notifications one group commit inserts at most.
const MAX_BATCH: usize = 4096;
/// The schema's migrations, embedded: the build needs no database.
#[rustfmt::skip]
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "sweep_leader", include_str!("migrations/0002_sweep_leader.sql")),
    (3, "history", include_str!("migrations/0003_history.sql")),
    (4, "ingest_source", include_str!("migrations/0004_ingest_source.sql")),
    (5, "events", include_str!("migrations/0005_events.sql")),
    (6, "recipients", include_str!("migrations/0006_recipients.sql")),
    (7, "dedup_digest", include_str!("migrations/0007_dedup_digest.sql")),
    (8, "escalation", include_str!("migrations/0008_escalation.sql")),
    (9, "shared_limits", include_str!("migrations/0009_shared_limits.sql")),
    (10, "history_channel_state", include_str!("migrations/0010_history_channel_state.sql")),
    (11, "claim_preferences", include_str!("migrations/0011_claim_preferences.sql")),
    (12, "idempotency_key_partial", include_str!("migrations/0012_idempotency_key_partial.sql")),
];
/// How long a daemon leads a periodic task (the sweep, the upkeep) after its last run: when it
/// dies, another daemon takes the task over this long after. Each run extends it (both run every
/// few seconds at most).
const LEAD_TERM_MS: i64 = 30_000;
/// A channel's wake-up hint is sent at most once per this long: each NOTIFY serialises commits
/// on the server (a few hundred notifying commits/s is the reported ceiling), and a loop that
/// was just woken claims what came after in the same claim or at its next poll.
const WAKE_DEBOUNCE: Duration = Duration::from_millis(20);
/// How long an operation waits for a connection of the pool (while the server is down, the
/// pool keeps trying to connect for this long before the operation answers unavailable).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long readiness waits for the pool, and then for a connection of its own when it asks
/// why the server is unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first and the longest wait before connecting and migrating again at start.
const SCHEMA_RETRY_MIN: Duration = Duration::from_millis(250);
const SCHEMA_RETRY_MAX: Duration = Duration::from_secs(10);
/// Pause before listening again after the listener failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// A pooled connection idle this long is checked before use (it may have died with a server
/// restart). One in steady use is not: sqlx already checks each as it goes back to the pool,
/// and a check on every use too would double the round trips of every query.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// Connections of `queue.max_connections` the hot path (claims, completions, group commits)
/// keeps to itself at most ([`dedicated`]); the pool has the rest.
const DEDICATED_AT_MOST: u32 = 4;

/// Options for connecting to the PostgreSQL outbox.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/database?...`
    pub url: String,
    /// The schema that holds notifyd's tables (created if missing).
    pub schema: String,
    /// Connections kept open at most.
    pub max_connections: u32,
    /// Where every "now" of the store comes from (a manual one in tests).
    pub clock: Clock,
    /// `url` is a PgBouncer in transaction mode: no LISTEN (wake-ups by polling only), no
    /// statement cache, every operation one transaction ([`pool`]).
    pub pgbouncer: bool,
    /// The daemon that leads the upkeep vacuums and analyzes `notifications` between
    /// autovacuum's visits ([`upkeep`]); `false` leaves it to the server.
    pub vacuum: bool,
}

impl PgOptions {
    /// Defaults for a URL: schema `notifyd`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "notifyd".into(),
            max_connections: 16,
            clock: Clock::System,
            pgbouncer: false,
            vacuum: true,
        }
    }
}

/// Whether `schema` is a name notifyd accepts for its schema: lower-case letters, digits and
/// `_`, not starting with a digit, at most 63 bytes (PostgreSQL's identifier length).
pub(crate) fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The PostgreSQL implementation of [`Outbox`].
pub struct PgOutbox {
    pool: Pool,
    /// The hot path's own connections, besides the pool.
    dedicated: Arc<Dedicated>,
    /// How the pool connects: readiness uses it to say why the server cannot be reached.
    connect: PgConnectOptions,
    /// Whether the schema is migrated yet (a daemon starts before its server is reachable).
    schema: Arc<watch::Sender<SchemaState>>,
    owner: String,
    clock: Clock,
    enqueues: mpsc::Sender<PendingEnqueue>,
    /// The PostgreSQL channel wake-up hints of this schema travel on.
    wake_channel: String,
    /// Dropping it stops the wake-up listener and the upkeep.
    stop_listening: watch::Sender<()>,
    /// Round trips to the server so far (`/metrics`, `notifyd bench`).
    trips: RoundTrips,
    /// The leases this daemon holds on rows with escalation steps (the claim says which): their
    /// completion opens a transaction, so the next step commits with the change that triggers
    /// it. Only this daemon can complete its leases (they are fenced by owner), so the claim's
    /// word is all it needs.
    escalating: std::sync::Mutex<HashSet<(String, LeaseToken)>>,
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox")
            .field("owner", &self.owner)
            .finish()
    }
}

/// Whether the queue's schema can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemaState {
    /// Migrated to this build's version: every operation may run.
    Migrated,
    /// Not yet, and why (the server is unreachable, a migration failed).
    Waiting(String),
}

/// How `opts` connects: its URL with notifyd's schema as the `search_path`.
fn connect_options(opts: &PgOptions) -> Result<PgConnectOptions> {
    if !valid_schema(&opts.schema) {
        return Err(StoreError::Internal(format!(
            "queue.schema {:?} is not a plain lower-case name",
            opts.schema
        )));
    }
    let connect = PgConnectOptions::from_str(&opts.url)
        .map_err(|e| StoreError::Unavailable(format!("queue.url: {e}")))?
        .application_name("notifyd");
    // PgBouncer refuses startup parameters it does not know (`options`, `extra_float_digits`):
    // there each transaction sets the search path itself ([`pool`]), and a cached statement would
    // be looked for on whichever server comes next.
    Ok(if opts.pgbouncer {
        connect.extra_float_digits(None).statement_cache_capacity(0)
    } else {
        connect.options([("search_path", opts.schema.as_str())])
    })
}

/// The pool's settings; every ping it makes is counted in `trips`.
fn pool_options(opts: &PgOptions, trips: &RoundTrips) -> PgPoolOptions {
    let (on_acquire, on_release) = (trips.clone(), trips.clone());
    PgPoolOptions::new()
        .max_connections((opts.max_connections - dedicated_slots(opts)).max(2))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let trips = on_acquire.clone();
            Box::pin(async move {
                if meta.idle_for < CHECK_IDLE_AFTER {
                    return Ok(true);
                }
                trips.one();
                // A dead connection is closed and another one taken.
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
        .after_release(move |_, _| {
            // sqlx pings every connection given back, right after this.
            on_release.one();
            Box::pin(async { Ok(true) })
        })
}

/// How many dedicated connections the hot path keeps ([`dedicated`]): a quarter of
/// `queue.max_connections`, at most [`DEDICATED_AT_MOST`]; none through PgBouncer, where every
/// operation must go through [`pool`]'s pinned transactions.
fn dedicated_slots(opts: &PgOptions) -> u32 {
    if opts.pgbouncer {
        0
    } else {
        (opts.max_connections / 4).min(DEDICATED_AT_MOST)
    }
}

/// Why `connect` cannot reach the server, from one connection of its own (a pool's error
/// would only say it timed out waiting); `None` when it can. Bounded in time.
async fn unreachable_because(connect: &PgConnectOptions) -> Option<String> {
    let attempt = sqlx::ConnectOptions::connect(connect);
    let why = match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            return None;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
    };
    Some(format!("PostgreSQL cannot be reached: {why}"))
}

/// Connects and migrates; why not, when that failed.
async fn prepare_schema(
    pool: &Pool,
    connect: &PgConnectOptions,
    schema: &str,
) -> std::result::Result<(), String> {
    if let Some(why) = unreachable_because(connect).await {
        return Err(why);
    }
    migrate(pool, schema).await.map_err(|e| e.to_string())?;
    warn_without_autovacuum(pool).await;
    Ok(())
}

/// Says so in the log when the server's autovacuum is off. The queue's tables set their own
/// autovacuum thresholds (0001), which only apply when it is on; off, only `notifications` is
/// vacuumed and analyzed, by notifyd's own upkeep ([`upkeep`], unless `queue.vacuum = false`),
/// and nothing removes the dead row versions of the other tables (attempts, events, receipts,
/// rate limits). Without any ANALYZE a generic plan made while the queue was small is kept for
/// the connection's life (one read the whole due index for every completion batch;
/// BENCHMARKS.md). Best effort: a server that cannot answer is reported by readiness instead.
async fn warn_without_autovacuum(pool: &Pool) {
    use sqlx::Row;
    // Simple protocol, no prepared statement: it also passes through PgBouncer.
    match sqlx::raw_sql("SHOW autovacuum")
        .fetch_one(pool.sqlx())
        .await
    {
        Ok(row) => {
            if let Ok(setting) = row.try_get::<String, _>(0)
                && setting.trim().eq_ignore_ascii_case("off")
            {
                tracing::warn!(
                    "PostgreSQL's autovacuum is off: notifyd vacuums its notifications table \
                     itself (queue.vacuum), but the dead row versions of its other tables are \
                     never removed. Turn it on (README, Scaling out), or run VACUUM ANALYZE on \
                     the queue's schema regularly."
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "Could not read PostgreSQL's autovacuum setting."),
    }
}

/// Connects and migrates until both succeeded (or the outbox is dropped), waiting longer after
/// each failure, up to [`SCHEMA_RETRY_MAX`]; the state says why it is still waiting.
async fn prepare_schema_until_done(
    pool: Pool,
    connect: PgConnectOptions,
    schema: String,
    state: Arc<watch::Sender<SchemaState>>,
    mut stop: watch::Receiver<()>,
) {
    let mut wait = SCHEMA_RETRY_MIN;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match prepare_schema(&pool, &connect, &schema).await {
            Ok(()) => {
                state.send_replace(SchemaState::Migrated);
                tracing::info!(schema, "The PostgreSQL queue is reachable and migrated.");
                return;
            }
            Err(why) => {
                wait = (wait * 2).min(SCHEMA_RETRY_MAX);
                tracing::warn!(schema, error = %why, retry_in = ?wait,
                    "The PostgreSQL queue is still not usable; the API answers 503 meanwhile.");
                state.send_replace(SchemaState::Waiting(why));
            }
        }
    }
}

/// One enqueue request waiting for the next group commit.
struct PendingEnqueue {
    items: Vec<NewNotification>,
    reply: oneshot::Sender<Result<Vec<Enqueued>>>,
}

impl PgOutbox {
    /// Connects, creates the schema and runs its migrations (under PostgreSQL's advisory lock,
    /// so daemons starting at once do not both migrate), and starts the enqueue task. Fails at
    /// once when the server cannot be reached: for the CLI, whose caller is waiting.
    pub async fn connect(opts: &PgOptions) -> Result<Self> {
        let connect = connect_options(opts)?;
        // One connection first: when the server cannot be reached, its error says why (refused,
        // bad password, no such database), where the pool's would only say it timed out.
        let probe = sqlx::ConnectOptions::connect(&connect).await?;
        sqlx::Connection::close(probe).await?;
        let trips = RoundTrips::default();
        let pool = Pool::new(
            pool_options(opts, &trips)
                .connect_with(connect.clone())
                .await?,
            opts,
        );
        migrate(&pool, &opts.schema).await?;
        Ok(Self::serving(
            opts,
            pool,
            connect,
            trips,
            watch::channel(SchemaState::Migrated),
        ))
    }

    /// The daemon's queue, whether or not the server is reachable: one attempt to connect and
    /// migrate, then, if it failed, more in the background, retried with backoff until they
    /// succeed; until then every operation answers [`StoreError::Unavailable`] saying why (what
    /// `/readyz` shows). A server that goes away later is reconnected to by the pool.
    pub async fn start(opts: &PgOptions) -> Result<Self> {
        let connect = connect_options(opts)?;
        let trips = RoundTrips::default();
        let pool = Pool::new(
            pool_options(opts, &trips).connect_lazy_with(connect.clone()),
            opts,
        );
        let first = prepare_schema(&pool, &connect, &opts.schema).await;
        let state = match &first {
            Ok(()) => SchemaState::Migrated,
            Err(why) => {
                tracing::warn!(schema = opts.schema, error = %why,
                    "The PostgreSQL queue is not usable yet; the API answers 503 meanwhile.");
                SchemaState::Waiting(why.clone())
            }
        };
        let outbox = Self::serving(opts, pool, connect, trips, watch::channel(state));
        if opts.vacuum {
            tokio::spawn(upkeep::keep_up(
                outbox.pool.clone(),
                opts.schema.clone(),
                outbox.owner.clone(),
                outbox.clock.clone(),
                outbox.trips.clone(),
                outbox.stop_listening.subscribe(),
            ));
        }
        if first.is_err() {
            tokio::spawn(prepare_schema_until_done(
                outbox.pool.clone(),
                outbox.connect.clone(),
                opts.schema.clone(),
                outbox.schema.clone(),
                outbox.stop_listening.subscribe(),
            ));
        }
        Ok(outbox)
    }

    /// The outbox on `pool`, with its enqueue task started.
    fn serving(
        opts: &PgOptions,
        pool: Pool,
        connect: PgConnectOptions,
        trips: RoundTrips,
        (schema, _): (watch::Sender<SchemaState>, watch::Receiver<SchemaState>),
    ) -> Self {
        let wake_channel = format!("notifyd_{}", opts.schema);
        let (enqueues, rx) = mpsc::channel(ENQUEUE_QUEUE);
        let dedicated = Arc::new(Dedicated::new(
            connect.clone(),
            dedicated_slots(opts) as usize,
            trips.clone(),
            ACQUIRE_TIMEOUT,
            CHECK_IDLE_AFTER,
        ));
        tokio::spawn(run_enqueues(
            pool.clone(),
            dedicated.clone(),
            rx,
            wake_channel.clone(),
            opts.clock.clone(),
            trips.clone(),
        ));
        Self {
            pool,
            dedicated,
            connect,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            clock: opts.clock.clone(),
            enqueues,
            wake_channel,
            schema: Arc::new(schema),
            stop_listening: watch::channel(()).0,
            trips,
            escalating: Default::default(),
        }
    }

    /// Closes every connection (tests drop their schema after this).
    pub async fn close(&self) {
        self.dedicated.close().await;
        self.pool.close().await;
    }

    /// `Ok` once the schema is migrated; until then why the queue cannot be used yet.
    fn usable(&self) -> Result<()> {
        match &*self.schema.borrow() {
            SchemaState::Migrated => Ok(()),
            SchemaState::Waiting(why) => Err(StoreError::Unavailable(format!(
                "the queue's schema is not ready yet: {why}"
            ))),
        }
    }

    async fn claim_rows(&self, channel: &str, limit: usize, lease_ms: i64) -> Result<Vec<Claimed>> {
        let now = self.clock.now_ms();
        let until = now.saturating_add(lease_ms);
        let mut out: Vec<LeasedRow> = Vec::new();
        let mut quarantined = 0;
        while out.len() < limit {
            let want = limit - out.len();
            self.trips.one();
            let claim = sqlx::query(sql::CLAIM)
                .bind(&self.owner)
                .bind(until)
                .bind(now)
                .bind(channel)
                .bind(i64::try_from(want).unwrap_or(i64::MAX));
            let rows = match self.dedicated.take().await? {
                Some(mut taken) => {
                    let rows = claim.fetch_all(taken.conn()).await?;
                    taken.keep();
                    rows
                }
                None => claim.fetch_all(&self.pool).await?,
            };
            let returned = rows.len();
            let mut unreadable = Vec::new();
            for r in &rows {
                match LeasedRow::decode(r) {
                    Ok(row) => out.push(row),
                    Err(why) => {
                        let id: String = r.try_get("id")?;
                        unreadable.push((id, why));
                    }
                }
            }
            for (id, why) in &unreadable {
                // The reason may quote stored values: the log names the column only.
                tracing::warn!(channel, notification_id = %id, column = why.column,
                    "Quarantined an unreadable notification: dead with unreadable_row.");
                self.trips.one();
                sqlx::query(sql::QUARANTINE)
                    .bind(id)
                    .bind(why.to_string())
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
            }
            quarantined += unreadable.len();
            if unreadable.is_empty() || returned < want || quarantined >= QUARANTINE_PER_CLAIM {
                break;
            }
        }
        out.sort_by(|a, b| {
            (a.prio_rank, a.due_at, &a.columns.id).cmp(&(b.prio_rank, b.due_at, &b.columns.id))
        });
        let escalating: Vec<(String, LeaseToken)> = out
            .iter()
            .filter(|row| row.escalates)
            .map(|row| (row.columns.id.clone(), row.columns.lease))
            .collect();
        if !escalating.is_empty() {
            self.escalating
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(escalating);
        }
        Ok(out
            .into_iter()
            .map(|row| Claimed {
                preferences: row.preferences,
                ..row.columns.into_claimed()
            })
            .collect())
    }

    /// Writes a planned batch of completions with one statement on `conn`, then the follow-ups
    /// of the changes that landed (receipts that arrived early and fail the notification, and
    /// fallback children), on the same connection.
    async fn write_completions(
        &self,
        conn: &mut PgConnection,
        batch: CompletionBatch,
        now: i64,
    ) -> Result<()> {
        let CompletionBatch {
            changes: c,
            records: r,
            fallback_after,
            events_after,
            escalate_after,
            ..
        } = batch;
        self.trips.one();
        let rows = sqlx::query(sql::COMPLETE)
            .bind(&c.id)
            .bind(&c.lease)
            .bind(&c.change)
            .bind(&c.state)
            .bind(&c.provider_id)
            .bind(&c.run_at)
            .bind(&c.refund)
            .bind(&c.code)
            .bind(&c.error)
            .bind(&c.channel)
            .bind(&self.owner)
            .bind(now)
            .bind(&r.id)
            .bind(&r.attempt)
            .bind(&r.started_at)
            .bind(&r.latency_ms)
            .bind(&r.outcome)
            .bind(&r.code)
            .bind(&r.error)
            .bind(&r.provider_id)
            .bind(&r.decision)
            .bind(&r.channel)
            .fetch_all(&mut *conn)
            .await?;
        let mut landed = HashSet::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(0)?;
            let lease = LeaseToken(row.try_get(1)?);
            let status: Option<String> = row.try_get(2)?;
            if let Some(status) = status {
                let provider_status: String = row.try_get(3)?;
                let code: Option<String> = row.try_get(4)?;
                match status.parse() {
                    Ok(status) => {
                        apply_receipt(
                            conn,
                            &self.trips,
                            &id,
                            status,
                            &provider_status,
                            code.as_deref(),
                            now,
                        )
                        .await?
                    }
                    // The schema's CHECK keeps this out; a receipt that cannot be read changes
                    // nothing.
                    Err(e) => tracing::warn!(notification_id = %id, error = %e,
                        "A stored receipt cannot be read; it was not applied."),
                }
            }
            landed.insert((id, lease));
        }
        for (id, lease) in c.id.into_iter().zip(c.lease.into_iter().map(LeaseToken)) {
            let key = (id, lease);
            if !landed.contains(&key) {
                tracing::warn!(notification_id = %key.0, lease = lease.0,
                    "Completion ignored: the lease was lost to a later claim.");
                continue;
            }
            if let Some(events) = events_after.get(&key) {
                for e in events {
                    self.trips.one();
                    insert_event(conn, e).await?;
                }
            }
            if let Some(trigger) = escalate_after.get(&key) {
                queue_escalation(conn, &self.trips, &key.0, *trigger, now).await?;
            }
            if fallback_after.contains(&key) {
                queue_fallback(conn, &self.trips, &key.0, now).await?;
            }
        }
        Ok(())
    }

    async fn request(
        &self,
        request: transition::Request,
        statement: &'static str,
        id: &str,
    ) -> Result<Transition> {
        let now = self.clock.now_ms();
        self.trips.one();
        let changed = sqlx::query(statement)
            .bind(id)
            .bind(now)
            .bind(request.applies_to().as_str())
            .bind(request.leads_to().as_str())
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1;
        let current = if changed {
            None
        } else {
            self.trips.one();
            let state: Option<String> = sqlx::query_scalar(sql::STATE)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            state.map(|s| parse_state(&s)).transpose()?
        };
        Ok(request.answer(changed, current))
    }

    /// Whether this daemon leads the periodic sweep now (taking or extending the lead).
    async fn leads_sweep(&self, now: i64) -> Result<bool> {
        self.trips.one();
        let granted: Option<String> = sqlx::query_scalar(sql::LEAD)
            .bind("sweep")
            .bind(&self.owner)
            .bind(now.saturating_add(LEAD_TERM_MS))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(granted.is_some())
    }

    /// One retention batch; how many notifications and unmatched receipts it deleted.
    async fn purge(&self, retention: &Retention, now: i64) -> Result<(u64, u64)> {
        let batch = i64::try_from(sweep::PURGE_BATCH).unwrap_or(i64::MAX);
        self.trips.one();
        let notifications = sqlx::query(sql::PURGE_FINISHED)
            .bind(retention.finished_before(now))
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        self.trips.one();
        let receipts = sqlx::query(sql::PURGE_UNMATCHED_RECEIPTS)
            .bind(retention.unmatched_receipts_before(now))
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok((notifications, receipts))
    }
}

/// Creates the schema if missing and brings it to the current version. Through PgBouncer, all
/// in one transaction, serialised by a transaction-level advisory lock (a session-level one,
/// sqlx's, would stay on whichever server PgBouncer handed it to).
async fn migrate(pool: &Pool, schema: &str) -> Result<()> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, name, text)| {
            Migration::new(
                *version,
                (*name).into(),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*text),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.create_schema(format!("\"{schema}\""));
    migrator.dangerous_set_table_name(format!("\"{schema}\"._sqlx_migrations"));
    let failed = |e| match e {
        sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
        other => StoreError::Internal(format!("queue migration: {other}")),
    };
    if !pool.through_pgbouncer() {
        return migrator.run(pool.sqlx()).await.map_err(failed);
    }
    migrator.set_locking(false);
    let mut tx = pool.begin().await?;
    sqlx::query(sql::MIGRATION_LOCK)
        .bind(format!("notifyd-migrate:{schema}"))
        .execute(&mut *tx)
        .await?;
    // What `run` does on the connection it acquires (`false`: apply, not skip); `run` itself
    // cannot take a transaction's connection in a spawned task ("Acquire is not general
    // enough", the reason sqlx gives for this method).
    migrator
        .run_direct(None, &mut *tx, false)
        .await
        .map_err(failed)?;
    tx.commit().await?;
    Ok(())
}

/// The group commit: waits for a request, takes every other one already waiting, and stores
/// them all in one transaction; each caller hears after the COMMIT.
async fn run_enqueues(
    pool: Pool,
    dedicated: Arc<Dedicated>,
    mut rx: mpsc::Receiver<PendingEnqueue>,
    wake_channel: String,
    clock: Clock,
    trips: RoundTrips,
) {
    let mut hints = Hints {
        channel: wake_channel,
        sent: HashMap::new(),
    };
    let mut batch: Vec<PendingEnqueue> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut size = first.items.len();
        batch.push(first);
        while size < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    size += more.items.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let on = Connections {
            pool: &pool,
            dedicated: &dedicated,
        };
        commit_enqueues(on, &trips, &mut batch, &mut hints, clock.now_ms()).await;
    }
}

/// Wake-up hints for other daemons, debounced per channel.
struct Hints {
    /// The PostgreSQL channel they travel on.
    channel: String,
    /// When each channel's last hint was sent.
    sent: HashMap<String, crate::clock::Instant>,
}

impl Hints {
    /// The channels of `created` rows whose hint was not sent within [`WAKE_DEBOUNCE`]; marks
    /// them sent.
    fn due(&mut self, created: &[&NewNotification]) -> Vec<String> {
        let now = crate::clock::now();
        let mut due = Vec::new();
        for n in created {
            let recent = self
                .sent
                .get(n.channel.as_str())
                .is_some_and(|at| now.duration_since(*at) < WAKE_DEBOUNCE);
            if !recent && !due.iter().any(|c| n.channel == *c) {
                due.push(n.channel.to_string());
            }
        }
        for c in &due {
            self.sent.insert(c.clone(), now);
        }
        if self.sent.len() > 1024 {
            self.sent
                .retain(|_, at| now.duration_since(*at) < WAKE_DEBOUNCE);
        }
        due
    }
}

async fn commit_enqueues(
    on: Connections<'_>,
    trips: &RoundTrips,
    batch: &mut Vec<PendingEnqueue>,
    hints: &mut Hints,
    now: i64,
) {
    let items: Vec<&NewNotification> = batch.iter().flat_map(|p| p.items.iter()).collect();
    match insert_in_transaction(on, trips, &items, hints, now).await {
        Ok(mut results) => {
            for pending in batch.drain(..) {
                let rest = results.split_off(pending.items.len().min(results.len()));
                let _ = pending.reply.send(Ok(results));
                results = rest;
            }
        }
        // One request's failure must not fail the others: each is tried on its own. Only a
        // bug (or a row the server refused) fails one request alone; an unavailable server
        // would fail every retry again, each after its own timeout, so all hear it at once.
        Err(e @ StoreError::Internal(_)) if batch.len() > 1 => {
            tracing::debug!(error = %e, "A group commit failed; its requests are retried one by one.");
            for pending in batch.drain(..) {
                let items: Vec<&NewNotification> = pending.items.iter().collect();
                let result = insert_in_transaction(on, trips, &items, hints, now).await;
                let _ = pending.reply.send(result);
            }
        }
        Err(e) => {
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Where the group commit runs: a dedicated connection when one is free, else the pool.
#[derive(Clone, Copy)]
struct Connections<'a> {
    pool: &'a Pool,
    dedicated: &'a Dedicated,
}

/// Inserts `items` atomically, with wake-up hints for the channels given work: in one
/// transaction, or, when none has a dedup key or joins a digest, with one statement, atomic on
/// its own (no `BEGIN` and `COMMIT` round trips), its hints sent once it committed.
async fn insert_in_transaction(
    on: Connections<'_>,
    trips: &RoundTrips,
    items: &[&NewNotification],
    hints: &mut Hints,
    now: i64,
) -> Result<Vec<Enqueued>> {
    let one_statement = items
        .iter()
        .all(|n| n.dedup.is_none() && n.digest.is_none());
    // Through PgBouncer every operation is a transaction of its own (see `pool.rs`).
    if one_statement && !on.pool.through_pgbouncer() {
        let results = match on.dedicated.take().await? {
            Some(mut taken) => {
                let results = insert(taken.conn(), trips, items, None).await?;
                taken.keep();
                results
            }
            None => {
                let mut conn = on.pool.sqlx().acquire().await?;
                insert(&mut conn, trips, items, None).await?
            }
        };
        // The rows are stored: a hint that cannot be sent only leaves them to the poll.
        if let Err(e) = send_hints(on, trips, items, &results, hints).await {
            tracing::debug!(error = %e, "Could not send wake-up hints; other daemons poll.");
        }
        return Ok(results);
    }
    trips.one();
    let mut taken = on.dedicated.take().await?;
    let mut tx = begin_on(&mut taken, on.pool).await?;
    let results = insert_with_hints(&mut tx, trips, items, hints, now).await?;
    trips.one();
    tx.commit().await?;
    Taken::keep_any(taken);
    Ok(results)
}

/// Starts a transaction on the dedicated connection taken, or else on the pool.
async fn begin_on<'t>(
    taken: &'t mut Option<Taken>,
    pool: &Pool,
) -> Result<sqlx::Transaction<'t, sqlx::Postgres>, sqlx::Error> {
    match taken {
        Some(taken) => taken.conn().begin().await,
        None => pool.begin().await,
    }
}

/// Inserts `items` on `conn` (in the caller's transaction), and sends the wake-up hints for the
/// channels given work, which the other daemons hear when it commits.
async fn insert_with_hints(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    items: &[&NewNotification],
    hints: &mut Hints,
    now: i64,
) -> Result<Vec<Enqueued>> {
    let results = enqueue_in(conn, trips, items, now).await?;
    let wake = hints.due(&created(items, &results));
    if !wake.is_empty() {
        trips.one();
        sqlx::query(sql::NOTIFY)
            .bind(&hints.channel)
            .bind(&wake)
            .execute(&mut *conn)
            .await?;
    }
    Ok(results)
}

/// The items `results` say were stored as new rows.
fn created<'a>(items: &[&'a NewNotification], results: &[Enqueued]) -> Vec<&'a NewNotification> {
    items
        .iter()
        .zip(results)
        .filter(|(_, r)| matches!(r, Enqueued::Created { .. }))
        .map(|(n, _)| *n)
        .collect()
}

/// Sends the wake-up hints for rows already committed, as a statement of its own.
async fn send_hints(
    on: Connections<'_>,
    trips: &RoundTrips,
    items: &[&NewNotification],
    results: &[Enqueued],
    hints: &mut Hints,
) -> Result<()> {
    let wake = hints.due(&created(items, results));
    if wake.is_empty() {
        return Ok(());
    }
    trips.one();
    let notify = sqlx::query(sql::NOTIFY).bind(&hints.channel).bind(&wake);
    match on.dedicated.take().await? {
        Some(mut taken) => {
            notify.execute(taken.conn()).await?;
            taken.keep();
        }
        None => {
            notify.execute(on.pool).await?;
        }
    }
    Ok(())
}

/// Listens for wake-up hints until `stop` is dropped: each names a channel given work by
/// another daemon. After the connection was lost, hints sent meanwhile are gone: every channel
/// is woken to look.
async fn listen_for_work(
    pool: Pool,
    wake_channel: String,
    wake: WakeUp,
    mut stop: watch::Receiver<()>,
) {
    loop {
        match sqlx::postgres::PgListener::connect_with(pool.sqlx()).await {
            Ok(mut listener) => match listener.listen(&wake_channel).await {
                Ok(()) => {
                    wake(None);
                    loop {
                        tokio::select! {
                            _ = stop.changed() => return,
                            got = listener.try_recv() => match got {
                                Ok(Some(hint)) => wake(Some(&ChannelName::from(hint.payload()))),
                                // Lost: the next call reconnects and listens again.
                                Ok(None) => wake(None),
                                Err(e) => {
                                    tracing::warn!(error = %e, "Wake-up listener failed; polling meanwhile.");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot listen for wake-ups; polling meanwhile.")
                }
            },
            Err(e) => tracing::warn!(error = %e, "Cannot connect for wake-ups; polling meanwhile."),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

/// Stores submitted `items`; one result per item, in order. Items without a dedup key go in
/// with one statement per run of them; one with a key takes its key or is merged into the
/// key's holder ([`crate::rules::dedup`]) on its own, after the items before it, so a later
/// item of the same batch sees an earlier one's key.
async fn enqueue_in(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    items: &[&NewNotification],
    now: i64,
) -> Result<Vec<Enqueued>> {
    let mut out = Vec::with_capacity(items.len());
    let mut plain: Vec<&NewNotification> = Vec::new();
    for n in items {
        if n.dedup.is_none() && n.digest.is_none() {
            plain.push(n);
            continue;
        }
        if !plain.is_empty() {
            out.extend(insert(conn, trips, &plain, None).await?);
            plain.clear();
        }
        let merged = match &n.dedup {
            Some(claim) => deduplicate(conn, trips, n, claim, now).await?,
            None => None,
        };
        out.push(match (merged, &n.digest) {
            (Some(merged), _) => merged,
            (None, None) => insert_one(conn, trips, n).await?,
            (None, Some(join)) => collect(conn, trips, n, join, now).await?,
        });
    }
    if !plain.is_empty() {
        out.extend(insert(conn, trips, &plain, None).await?);
    }
    Ok(out)
}

/// Inserts one submitted notification.
async fn insert_one(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    n: &NewNotification,
) -> Result<Enqueued> {
    insert(conn, trips, &[n], None)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Internal("no result for an inserted row".into()))
}

/// Stores `n` as an item of the digest it joins ([`crate::rules::digest`]). A replay of an
/// idempotency key is answered as such and joins nothing.
async fn collect(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    n: &NewNotification,
    join: &DigestJoin,
    now: i64,
) -> Result<Enqueued> {
    let stored = insert_one(conn, trips, n).await?;
    if !matches!(stored, Enqueued::Created { .. }) {
        return Ok(stored);
    }
    trips.one();
    let digest_id: String = sqlx::query_scalar(sql::JOIN_DIGEST)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&n.channel)
        .bind(&n.to)
        .bind(n.priority.as_str())
        .bind(join.until_ms)
        .bind(now)
        .bind(&join.key)
        .bind(i64::from(join.max))
        .bind(crate::recipients::normalize(&n.to))
        .fetch_one(&mut *conn)
        .await?;
    trips.one();
    sqlx::query(sql::COLLECT_ITEM)
        .bind(&n.id)
        .bind(&digest_id)
        .bind(join.vars.as_ref().map(serde_json::Value::to_string))
        .bind(MAX_TIME_MS)
        .execute(&mut *conn)
        .await?;
    trips.one();
    insert_event(
        conn,
        &crate::rules::digest::collected(&n.id, &digest_id, &join.key, now),
    )
    .await?;
    Ok(stored)
}

/// Ends the items still waiting in digest `id` as the digest's completion says, each with its
/// timeline line.
async fn end_digest_items(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    id: &str,
    attempt: u32,
    change: &RowChange,
    now: i64,
) -> Result<()> {
    let Some(ending) = crate::rules::digest::ending(id, change) else {
        return Ok(());
    };
    trips.one();
    let items: Vec<String> = sqlx::query_scalar(sql::END_DIGEST_ITEMS)
        .bind(id)
        .bind(now)
        .bind(ending.state.as_str())
        .bind(&ending.provider_id)
        .bind(&ending.code)
        .bind(&ending.error)
        .fetch_all(&mut *conn)
        .await?;
    for item in items {
        let event = crate::rules::digest::ended(&item, id, ending.digest, attempt, now);
        trips.one();
        insert_event(conn, &event).await?;
    }
    Ok(())
}

/// Takes `n`'s dedup key, or merges `n` into the notification holding it. `None`: the key is
/// now `n`'s, insert it. A replay of an idempotency key is answered as such first: it is the
/// same request, not a duplicate.
async fn deduplicate(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    n: &NewNotification,
    claim: &DedupClaim,
    now: i64,
) -> Result<Option<Enqueued>> {
    trips.one();
    if let Some(key) = &n.idempotency_key
        && let Some(r) = sqlx::query(sql::KEY_HOLDER)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
    {
        return Ok(Some(key_holder(&r, 0)?.answer(&n.content_hash)));
    }
    trips.one();
    let took: Option<String> = sqlx::query_scalar(sql::TAKE_DEDUP_KEY)
        .bind(&n.channel)
        .bind(&n.to)
        .bind(&claim.key)
        .bind(&n.id)
        .bind(claim.until_ms)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    if took.is_some() {
        return Ok(None);
    }
    trips.one();
    let holder: Option<(String, String)> = sqlx::query_as(sql::COUNT_DUPLICATE)
        .bind(&n.channel)
        .bind(&n.to)
        .bind(&claim.key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((id, state)) = holder else {
        trips.one();
        sqlx::query(sql::TAKE_ORPHANED_DEDUP_KEY)
            .bind(&n.channel)
            .bind(&n.to)
            .bind(&claim.key)
            .bind(&n.id)
            .bind(claim.until_ms)
            .execute(&mut *conn)
            .await?;
        return Ok(None);
    };
    trips.one();
    insert_event(conn, &crate::rules::dedup::merged(&id, &claim.key, now)).await?;
    Ok(Some(Enqueued::Deduplicated {
        id: id.into(),
        state: parse_state(&state)?,
    }))
}

/// Inserts `items` with one statement (the fallback child of `parent` when given); one result
/// per item, in order.
async fn insert(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    items: &[&NewNotification],
    parent: Option<&str>,
) -> Result<Vec<Enqueued>> {
    let mut columns = InsertColumns::default();
    for n in items {
        columns.push(n, parent)?;
    }
    trips.one();
    let created: HashSet<String> = sqlx::query_scalar(sql::INSERT)
        .bind(columns.id)
        .bind(columns.channel)
        .bind(columns.recipient)
        .bind(columns.subject)
        .bind(columns.body)
        .bind(columns.html)
        .bind(columns.data)
        .bind(columns.priority)
        .bind(columns.run_at)
        .bind(columns.expires_at)
        .bind(columns.created_at)
        .bind(columns.idempotency_key)
        .bind(columns.content_hash)
        .bind(columns.fallback)
        .bind(columns.parent_id)
        .bind(columns.source)
        .bind(columns.deliver_between)
        .bind(columns.escalate)
        .bind(columns.escalation_of)
        .bind(columns.recipient_key)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let held: Vec<String> = items
        .iter()
        .filter(|n| !created.contains(n.id.as_str()))
        .filter_map(|n| n.idempotency_key.clone())
        .collect();
    let mut holders: HashMap<String, KeyHolder> = HashMap::new();
    if !held.is_empty() {
        trips.one();
        let rows = sqlx::query(sql::KEY_HOLDERS)
            .bind(&held)
            .fetch_all(&mut *conn)
            .await?;
        for r in rows {
            let key: String = r.try_get(0)?;
            holders.insert(key, key_holder(&r, 1)?);
        }
    }
    items
        .iter()
        .map(|n| {
            if created.contains(n.id.as_str()) {
                return Ok(Enqueued::Created { id: n.id.clone() });
            }
            n.idempotency_key
                .as_ref()
                .and_then(|key| holders.get(key))
                .map(|holder| holder.clone().answer(&n.content_hash))
                .ok_or_else(|| {
                    StoreError::Internal(
                        "insert ignored but no row holds its idempotency key".into(),
                    )
                })
        })
        .collect()
}

/// The columns of an INSERT of several rows, one array each.
#[derive(Default)]
struct InsertColumns {
    id: Vec<String>,
    channel: Vec<String>,
    recipient: Vec<String>,
    subject: Vec<Option<String>>,
    body: Vec<Option<String>>,
    html: Vec<Option<String>>,
    data: Vec<Option<String>>,
    priority: Vec<String>,
    run_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    created_at: Vec<i64>,
    idempotency_key: Vec<Option<String>>,
    content_hash: Vec<String>,
    fallback: Vec<Option<String>>,
    parent_id: Vec<Option<String>>,
    source: Vec<Option<String>>,
    deliver_between: Vec<Option<String>>,
    escalate: Vec<Option<String>>,
    escalation_of: Vec<Option<String>>,
    /// The recipient's address as its preferences are stored under, so the claim reads them.
    recipient_key: Vec<String>,
}

impl InsertColumns {
    fn push(&mut self, n: &NewNotification, parent: Option<&str>) -> Result<()> {
        let fallback = if n.fallback.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&n.fallback)
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
            )
        };
        self.id.push(n.id.clone().into());
        self.channel.push(n.channel.clone().into());
        self.recipient.push(n.to.clone());
        self.subject.push(n.subject.clone());
        self.body.push(n.body.clone());
        self.html.push(n.html.clone());
        self.data
            .push(n.data.as_ref().map(serde_json::Value::to_string));
        self.priority.push(n.priority.as_str().to_owned());
        self.run_at.push(n.run_at_ms);
        self.expires_at.push(n.expires_at_ms);
        self.created_at.push(n.created_at_ms);
        self.idempotency_key.push(n.idempotency_key.clone());
        self.content_hash.push(n.content_hash.clone());
        self.fallback.push(fallback);
        self.parent_id.push(parent.map(str::to_owned));
        self.source.push(n.source.clone());
        self.deliver_between.push(
            n.deliver_between
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        );
        self.escalate.push(if n.escalation.steps.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&n.escalation.steps)
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
            )
        });
        self.escalation_of
            .push(n.escalation.root.clone().map(Into::into));
        self.recipient_key.push(crate::recipients::normalize(&n.to));
        Ok(())
    }
}

/// The key holder in columns `from..` (id, state, content_hash) of `r`.
fn key_holder(r: &PgRow, from: usize) -> Result<KeyHolder> {
    let state: String = r.try_get(from + 1)?;
    Ok(KeyHolder {
        id: r.try_get(from)?,
        state: parse_state(&state)?,
        content_hash: r.try_get(from + 2)?,
    })
}

fn parse_state(s: &str) -> Result<State> {
    s.parse().map_err(StoreError::Internal)
}

async fn apply_receipt(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    id: &str,
    status: ReceiptStatus,
    provider_status: &str,
    error_code: Option<&str>,
    now: i64,
) -> Result<()> {
    if let Some((code, error)) = receipt::receipt_failure(status, provider_status, error_code) {
        let (from, to) = receipt::RECEIPT_FAILS;
        trips.one();
        sqlx::query(sql::FAIL_BY_RECEIPT)
            .bind(id)
            .bind(code)
            .bind(error)
            .bind(now)
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn queue_fallback(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    parent: &str,
    now: i64,
) -> Result<()> {
    trips.one();
    let row = sqlx::query(sql::FALLBACK_PARENT)
        .bind(parent)
        .fetch_one(&mut *conn)
        .await?;
    let parent_row = match decode_fallback_parent(&row, parent) {
        Ok(p) => p,
        Err(why) => {
            // The reason may quote stored values: the log names the column only.
            tracing::error!(notification_id = %parent, column = why.column,
                "A stored column needed for the fallback cannot be read; the notification is now a dead letter.");
            let reason = Reason::UNREADABLE_ROW;
            trips.one();
            sqlx::query(sql::END_UNREADABLE)
                .bind(parent)
                .bind(reason.code)
                .bind(why.to_string())
                .bind(now)
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
    };
    let child_id = NotificationId::generate();
    if let Some(child) = fallback::fallback_child(parent_row, child_id, now) {
        insert(conn, trips, &[&child], Some(parent)).await?;
    }
    Ok(())
}

/// Queues the next escalation step of a notification just delivered or ended
/// ([`escalation::next_step`]), unless its chain was acknowledged. The chain's first row is
/// read under its lock, which an acknowledgement takes too: a step is never queued after an
/// acknowledgement committed, and one queued before it is cancelled by it.
async fn queue_escalation(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    parent: &str,
    trigger: StepTrigger,
    now: i64,
) -> Result<()> {
    trips.one();
    let row = sqlx::query(sql::STEP_PARENT)
        .bind(parent)
        .fetch_one(&mut *conn)
        .await?;
    let parent_row = match decode_step_parent(&row, parent) {
        Ok(p) => p,
        Err(why) => {
            tracing::error!(notification_id = %parent, column = why.column,
                "A stored column needed for the next escalation step cannot be read; no step was queued.");
            return Ok(());
        }
    };
    trips.one();
    let acked_at: Option<Option<i64>> = sqlx::query_scalar(sql::CHAIN_ACKED_FOR_UPDATE)
        .bind(&parent_row.root)
        .fetch_optional(&mut *conn)
        .await?;
    let acknowledged = matches!(acked_at, Some(Some(_)));
    let child_id = NotificationId::generate();
    if let Some(step) = escalation::next_step(parent_row, acknowledged, trigger, child_id, now) {
        tracing::info!(notification_id = %parent, step = %step.id, channel = %step.channel,
            run_at = step.run_at_ms, "Queued the next escalation step.");
        insert(conn, trips, &[&step], Some(parent)).await?;
        for e in escalation::step_events(parent, &step, trigger, now) {
            trips.one();
            insert_event(conn, &e).await?;
        }
    }
    Ok(())
}

/// A row's `subject`, `body`, `html` and `data`.
fn decode_content(r: &PgRow) -> std::result::Result<Content, Unreadable> {
    Ok(Content {
        subject: stored::get(r, "subject")?,
        body: stored::get(r, "body")?,
        html: stored::get(r, "html")?,
        data: stored::get(r, "data")?,
    })
}

fn decode_priority(text: &str) -> std::result::Result<Priority, Unreadable> {
    text.parse().map_err(|e: String| Unreadable {
        column: "priority",
        problem: e,
    })
}

fn decode_step_parent(r: &PgRow, id: &str) -> std::result::Result<StepParent, Unreadable> {
    let priority: String = stored::get(r, "priority")?;
    Ok(StepParent {
        id: id.to_owned(),
        steps: stored::opt_json(r, "escalate")?.unwrap_or_default(),
        root: stored::get(r, "root")?,
        content: decode_content(r)?,
        priority: decode_priority(&priority)?,
        expires_at_ms: stored::get(r, "expires_at")?,
    })
}

/// Acknowledges the chain `id` belongs to in one transaction, as [`escalation::plan_ack`]
/// says. The chain's first row is locked by the UPDATE that marks it, so a completion queueing
/// a step waits for this commit and then sees the mark.
async fn acknowledge_in(
    conn: &mut PgConnection,
    trips: &RoundTrips,
    id: &str,
    source: AckSource,
    now: i64,
) -> Result<Acknowledged> {
    trips.one();
    let target = sqlx::query(sql::ACK_TARGET)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| -> Result<AckTarget> {
            Ok(AckTarget {
                root: r.try_get(0)?,
                escalates: r.try_get(1)?,
                acked_at_ms: r.try_get(2)?,
            })
        })
        .transpose()?;
    Ok(match escalation::plan_ack(target) {
        AckPlan::NotFound => Acknowledged::NotFound,
        AckPlan::NothingToAck => Acknowledged::NothingToAck,
        AckPlan::Already { root, at_ms } => Acknowledged::Already {
            root: root.into(),
            at_ms,
        },
        AckPlan::Mark { root } => {
            trips.one();
            let marked = sqlx::query(sql::MARK_ACKED)
                .bind(&root)
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if marked == 0 {
                // Another daemon acknowledged it meanwhile: its answer is the first one.
                trips.one();
                let at_ms: Option<i64> = sqlx::query_scalar(sql::CHAIN_ACKED)
                    .bind(&root)
                    .fetch_one(&mut *conn)
                    .await?;
                return Ok(Acknowledged::Already {
                    root: root.into(),
                    at_ms: at_ms.unwrap_or(now),
                });
            }
            trips.one();
            let cancelled = sqlx::query(sql::CANCEL_WAITING_STEPS)
                .bind(&root)
                .bind(now)
                .bind(escalation::ACKNOWLEDGED_CODE)
                .bind(escalation::ACKNOWLEDGED_MESSAGE)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            tracing::info!(notification_id = %root, via = source.as_str(), cancelled,
                "Escalation acknowledged.");
            trips.one();
            insert_event(conn, &escalation::ack_event(&root, source, cancelled, now)).await?;
            Acknowledged::Done {
                root: root.into(),
                at_ms: now,
                cancelled,
            }
        }
    })
}

fn decode_fallback_parent(r: &PgRow, id: &str) -> std::result::Result<FallbackParent, Unreadable> {
    let priority: String = stored::get(r, "priority")?;
    Ok(FallbackParent {
        id: id.to_owned(),
        routes: stored::opt_json(r, "fallback")?.unwrap_or_default(),
        content: decode_content(r)?,
        priority: decode_priority(&priority)?,
        expires_at_ms: stored::get(r, "expires_at")?,
        created_at_ms: stored::get(r, "created_at")?,
    })
}

/// A claimed row, decoded, with what orders a claim's rows.
struct LeasedRow {
    prio_rank: i16,
    due_at: i64,
    /// Whether it has escalation steps (and notifyd wrote it).
    escalates: bool,
    columns: ClaimedColumns,
    preferences: ClaimedPreferences,
}

impl LeasedRow {
    fn decode(r: &PgRow) -> std::result::Result<Self, Unreadable> {
        let validation = if stored::get(r, "checked")? {
            Validation::Done
        } else {
            Validation::Pending {
                fallback: stored::opt_json(r, "fallback")?.unwrap_or_default(),
            }
        };
        let attempt = stored::int(r, "attempts", 1..=i64::from(u32::MAX))?;
        let prio_rank: i16 = stored::get(r, "prio_rank")?;
        Ok(Self {
            prio_rank,
            due_at: stored::get(r, "due_at")?,
            escalates: stored::get(r, "escalates")?,
            columns: ClaimedColumns {
                id: stored::get(r, "id")?,
                channel: stored::get(r, "channel")?,
                recipient: stored::get(r, "recipient")?,
                subject: stored::get(r, "subject")?,
                body: stored::get(r, "body")?,
                html: stored::get(r, "html")?,
                data: stored::get(r, "data")?,
                created_at_ms: stored::int(r, "created_at", 0..=MAX_TIME_MS)?,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                expires_at_ms: stored::get(r, "expires_at")?,
                tried: stored::opt_json(r, "tried")?.unwrap_or_default(),
                lease: LeaseToken(stored::int(r, "lease", LeaseToken::CLAIMED)?),
                validation,
                priority: Priority::of_rank(i64::from(prio_rank)),
                deliver_between: stored::opt_json(r, "deliver_between")?,
                digest_key: stored::get(r, "digest_key")?,
            },
            preferences: claimed_preferences(r)?,
        })
    }
}

/// The recipient's preferences the claim read with a row (see [`sql::CLAIM`]).
fn claimed_preferences(r: &PgRow) -> std::result::Result<ClaimedPreferences, Unreadable> {
    if !stored::get::<bool>(r, "preferences_read")? {
        return Ok(ClaimedPreferences::NotRead);
    }
    let Some(json) = stored::get::<Option<String>>(r, "preferences")? else {
        return Ok(ClaimedPreferences::Read(None));
    };
    let address: String = stored::get(r, "recipient_key")?;
    Ok(match recipients::decode(&address, &json) {
        Ok(prefs) => ClaimedPreferences::Read(Some(prefs)),
        Err(e) => {
            tracing::warn!(error = %e,
                "Stored recipient preferences cannot be read; the claimed notification waits.");
            ClaimedPreferences::Unreadable
        }
    })
}

/// A count as the API shows it (the schema keeps counters non-negative in practice).
fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Configuration(_) => StoreError::Unavailable(e.to_string()),
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // 08: connection; 53: out of resources (disk full, too many connections); 57:
                // operator intervention (shutdown, restart); 25006: read-only transaction.
                if code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "25006"
                {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Internal(e.to_string())
                }
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn enqueue(&self, items: Vec<NewNotification>) -> Result<Vec<Enqueued>> {
        self.usable()?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.enqueues
            .send(PendingEnqueue { items, reply })
            .await
            .map_err(|_| StoreError::Unavailable("queue enqueue task stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("queue enqueue task stopped".into()))?
    }

    async fn find_key(&self, key: &str) -> Result<Option<KeyHolder>> {
        self.usable()?;
        self.trips.one();
        let row = sqlx::query(sql::KEY_HOLDER)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_holder(&r, 0)).transpose()
    }

    async fn claim(
        &self,
        channel: &ChannelName,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        self.usable()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.claim_rows(channel, limit, lease_ms).await
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<()> {
        self.usable()?;
        if completions.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let escalating: HashSet<(String, LeaseToken)> = {
            let mut held = self
                .escalating
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            completions
                .iter()
                .filter_map(|c| held.take(&(c.id.clone().into(), c.lease)))
                .collect()
        };
        let batch = CompletionBatch::plan(completions, now, &escalating);
        if batch.is_empty() {
            return Ok(());
        }
        // Through PgBouncer every operation is a transaction of its own (see `pool.rs`).
        let in_transaction = batch.may_follow_up || self.pool.through_pgbouncer();
        let mut taken = self.dedicated.take().await?;
        if in_transaction {
            // The follow-ups commit with the changes they follow, or not at all.
            self.trips.one();
            let mut tx = begin_on(&mut taken, &self.pool).await?;
            self.write_completions(&mut tx, batch, now).await?;
            self.trips.one();
            tx.commit().await?;
        } else {
            // One statement: atomic on its own, no transaction to open and commit.
            match &mut taken {
                Some(taken) => self.write_completions(taken.conn(), batch, now).await?,
                None => {
                    let mut conn = self.pool.sqlx().acquire().await?;
                    self.write_completions(&mut conn, batch, now).await?;
                }
            }
        }
        Taken::keep_any(taken);
        Ok(())
    }

    async fn get(&self, id: &NotificationId) -> Result<Option<NotificationView>> {
        self.usable()?;
        self.trips.one();
        let Some(r) = sqlx::query(sql::GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        self.trips.one();
        let attempt_log = sqlx::query(sql::ATTEMPTS)
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptView {
                    attempt: clamp_u32(a.try_get("attempt")?),
                    started_at_ms: a.try_get("started_at")?,
                    latency_ms: a.try_get("latency_ms")?,
                    outcome: a.try_get("outcome")?,
                    code: a.try_get("code")?,
                    error: a.try_get("error")?,
                    provider_id: a.try_get("provider_id")?,
                    decision: a.try_get("decision")?,
                    channel: a.try_get("channel")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.trips.one();
        let receipts = sqlx::query(sql::RECEIPTS)
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(ReceiptView {
                    status: a.try_get("status")?,
                    provider_status: a.try_get("provider_status")?,
                    error_code: a.try_get("error_code")?,
                    received_at_ms: a.try_get("received_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let events = sqlx::query(sql::EVENTS)
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|e| {
                Ok(EventView {
                    at_ms: e.try_get("at")?,
                    rule: e.try_get("rule")?,
                    detail: e.try_get("detail")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let state: String = r.try_get("state")?;
        let priority: String = r.try_get("priority")?;
        // Lenient, as views are: fallback routes that cannot be read show as none (the row's
        // last_error says why once it was quarantined).
        let fallback: Option<serde_json::Value> = r.try_get("fallback")?;
        let fallback = fallback
            .and_then(|v| serde_json::from_value::<Vec<FallbackRoute>>(v).ok())
            .map(|routes| routes.into_iter().map(|r| r.target).collect())
            .unwrap_or_default();
        Ok(Some(NotificationView {
            id: r.try_get("id")?,
            channel: r.try_get("channel")?,
            to: r.try_get("recipient")?,
            state: parse_state(&state)?,
            priority: priority.parse().unwrap_or(Priority::Low),
            attempts: clamp_u32(r.try_get("attempts")?),
            created_at_ms: r.try_get("created_at")?,
            run_at_ms: r.try_get("run_at")?,
            expires_at_ms: r.try_get("expires_at")?,
            provider_id: r.try_get("provider_id")?,
            last_code: r.try_get("last_code")?,
            last_error: r.try_get("last_error")?,
            parent_id: r.try_get("parent_id")?,
            fallback,
            source: r.try_get("source")?,
            duplicates: u64::try_from(r.try_get::<i64, _>("duplicates")?).unwrap_or(0),
            digest_id: r.try_get("digest_id")?,
            digest_key: r.try_get("digest_key")?,
            attempt_log,
            receipts,
            events,
        }))
    }

    async fn cancel(&self, id: &NotificationId) -> Result<Transition> {
        self.usable()?;
        let request = transition::Request::Cancel;
        let now = self.clock.now_ms();
        self.trips.one();
        let mut tx = self.pool.begin().await?;
        self.trips.one();
        let changed = sqlx::query(sql::CANCEL)
            .bind(id)
            .bind(now)
            .bind(request.applies_to().as_str())
            .bind(request.leads_to().as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        let current = if changed {
            // A cancelled digest fails the items waiting in it, in the same commit.
            end_digest_items(
                &mut tx,
                &self.trips,
                id,
                0,
                &crate::rules::digest::cancelled(),
                now,
            )
            .await?;
            None
        } else {
            self.trips.one();
            let state: Option<String> = sqlx::query_scalar(sql::STATE)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            state.map(|s| parse_state(&s)).transpose()?
        };
        self.trips.one();
        tx.commit().await?;
        Ok(request.answer(changed, current))
    }

    async fn dead_letters(
        &self,
        channel: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.usable()?;
        self.trips.one();
        let rows = sqlx::query(sql::DEAD_LETTERS)
            .bind(channel)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get("id")?,
                    channel: r.try_get("channel")?,
                    to: r.try_get("recipient")?,
                    attempts: clamp_u32(r.try_get("attempts")?),
                    last_code: r.try_get("last_code")?,
                    last_error: r.try_get("last_error")?,
                    died_at_ms: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn replay(&self, id: &NotificationId) -> Result<Transition> {
        self.usable()?;
        self.request(transition::Request::Replay, sql::REPLAY, id)
            .await
    }

    async fn depth(&self) -> Result<Vec<Depth>> {
        self.usable()?;
        self.trips.one();
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as(sql::DEPTH).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(channel, state, count)| {
                Ok(Depth {
                    channel: channel.into(),
                    state: parse_state(&state)?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn oldest_due(&self, channels: &[ChannelName]) -> Result<Vec<(ChannelName, i64)>> {
        self.usable()?;
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        self.trips.one();
        let rows: Vec<(ChannelName, i64)> = sqlx::query_as(sql::OLDEST_DUE)
            .bind(channels)
            .bind(self.clock.now_ms())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn move_due(
        &self,
        channel: &ChannelName,
        how: OpenBreakerMove,
        limit: usize,
    ) -> Result<u64> {
        self.usable()?;
        let now = self.clock.now_ms();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = match &how {
            OpenBreakerMove::Defer { until_ms } => {
                let why = Reason::BREAKER_DEFERRED;
                sqlx::query(sql::DEFER_DUE)
                    .bind(channel)
                    .bind(now)
                    .bind(*until_ms)
                    .bind(limit)
                    .bind(why.code)
                    .bind(why.message)
            }
            OpenBreakerMove::Reroute { to } => {
                let why = Reason::BREAKER_MOVED;
                sqlx::query(sql::REROUTE_DUE)
                    .bind(channel)
                    .bind(now)
                    .bind(to.as_str())
                    .bind(limit)
                    .bind(why.code)
                    .bind(why.message)
            }
        };
        self.trips.one();
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Runs on the one daemon that leads the sweep; the others answer an empty report.
    async fn sweep(
        &self,
        known_channels: &[ChannelName],
        retention: &Retention,
    ) -> Result<SweepReport> {
        self.usable()?;
        let now = self.clock.now_ms();
        if !self.leads_sweep(now).await? {
            return Ok(SweepReport::default());
        }
        limits::prune(&self.pool, now).await?;
        let (mut purged, mut receipts_purged) = self.purge(retention, now).await?;
        let mut full = sweep::purge_again(purged, receipts_purged);
        let mut batches = 1;
        while full && batches < sweep::PURGE_BATCHES_PER_SWEEP {
            let (n, r) = self.purge(retention, now).await?;
            purged += n;
            receipts_purged += r;
            full = sweep::purge_again(n, r);
            batches += 1;
        }
        // Dedup keys whose window is over hold nothing any more ([`crate::rules::dedup::holds`]).
        self.trips.one();
        sqlx::query(sql::PURGE_DEDUP_KEYS)
            .bind(now)
            .bind(sweep::PURGE_BATCH as i64)
            .execute(&self.pool)
            .await?;
        let expired_reason = Reason::EXPIRED;
        self.trips.one();
        let expired = sqlx::query_as::<_, (String, String)>(sql::EXPIRE_OVERDUE)
            .bind(now)
            .bind(expired_reason.code)
            .bind(expired_reason.message)
            .bind(sweep::EXPIRE_BATCH as i64)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(id, channel)| ExpiredRow {
                id: id.into(),
                channel: channel.into(),
            })
            .collect();
        self.trips.one();
        let live: Vec<String> = sqlx::query_scalar(sql::LIVE_CHANNELS)
            .fetch_all(&self.pool)
            .await?;
        let orphan_reason = Reason::UNKNOWN_CHANNEL;
        let mut orphaned = 0;
        for channel in sweep::unknown_channels(&live, known_channels) {
            self.trips.one();
            orphaned += sqlx::query(sql::DEAD_LETTER_ORPHANS)
                .bind(channel)
                .bind(now)
                .bind(orphan_reason.code)
                .bind(orphan_reason.message)
                .bind(sweep::ORPHAN_BATCH as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(SweepReport {
            expired,
            orphaned,
            purged,
            receipts_purged,
        })
    }

    async fn record_events(&self, events: Vec<RuleEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for e in &events {
            insert_event(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_receipt(&self, r: InboundReceipt) -> Result<RecordedReceipt> {
        self.usable()?;
        let now = self.clock.now_ms();
        self.trips.one();
        let mut tx = self.pool.begin().await?;
        self.trips.one();
        let target: Option<String> = sqlx::query_scalar(sql::RECEIPT_TARGET)
            .bind(&r.provider_id)
            .bind(&r.channel)
            .fetch_optional(&mut *tx)
            .await?;
        self.trips.one();
        let inserted = sqlx::query(sql::INSERT_RECEIPT)
            .bind(&r.channel)
            .bind(&r.provider_id)
            .bind(r.status.as_str())
            .bind(&r.provider_status)
            .bind(&r.error_code)
            .bind(now)
            .bind(&target)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            // Already stored (and applied, if it matched): a replay changes nothing.
            self.trips.one();
            tx.commit().await?;
            return Ok(RecordedReceipt {
                notification_id: target.map(Into::into),
                duplicate: true,
            });
        }
        if let Some(id) = &target {
            apply_receipt(
                &mut tx,
                &self.trips,
                id,
                r.status,
                &r.provider_status,
                r.error_code.as_deref(),
                now,
            )
            .await?;
        }
        self.trips.one();
        tx.commit().await?;
        Ok(RecordedReceipt {
            notification_id: target.map(Into::into),
            duplicate: false,
        })
    }

    async fn acknowledge(&self, id: &NotificationId, source: AckSource) -> Result<Acknowledged> {
        self.usable()?;
        let now = self.clock.now_ms();
        // BEGIN, the reads and writes (at most five), COMMIT.
        self.trips.one();
        let mut tx = self.pool.begin().await?;
        let answer = acknowledge_in(&mut tx, &self.trips, id, source, now).await?;
        self.trips.one();
        tx.commit().await?;
        Ok(answer)
    }

    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage> {
        self.usable()?;
        self.trips.one();
        history::page(&self.pool, query).await
    }

    async fn digest_items(&self, digest_id: &NotificationId) -> Result<Vec<DigestItem>> {
        self.usable()?;
        self.trips.one();
        let rows = sqlx::query(sql::DIGEST_ITEMS)
            .bind(digest_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DigestItem {
                    id: r.try_get("id")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    html: r.try_get("html")?,
                    data: r.try_get("data")?,
                    vars: r.try_get("vars")?,
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn content(&self, id: &NotificationId) -> Result<Option<Content>> {
        self.usable()?;
        self.trips.one();
        history::content(&self.pool, id).await
    }

    fn cluster_limits(&self) -> Option<std::sync::Arc<dyn crate::outbox::limits::ClusterLimits>> {
        Some(std::sync::Arc::new(limits::PgLimits {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            trips: self.trips.clone(),
        }))
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn round_trips(&self) -> Option<u64> {
        Some(self.trips.total())
    }

    fn wake_on_remote_work(&self, wake: WakeUp) {
        // PgBouncer in transaction mode keeps no session to LISTEN on: loops poll only.
        if self.pool.through_pgbouncer() {
            return;
        }
        tokio::spawn(listen_for_work(
            self.pool.clone(),
            self.wake_channel.clone(),
            wake,
            self.stop_listening.subscribe(),
        ));
    }

    async fn put_preferences(&self, address: &str, prefs: &Preferences) -> Result<()> {
        recipients::put(&self.pool, address, prefs, self.clock.now_ms()).await
    }

    async fn preferences(&self, addresses: &[String]) -> Result<Vec<(String, Preferences)>> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        self.trips.one();
        recipients::read(&self.pool, addresses).await
    }

    async fn delete_preferences(&self, address: &str) -> Result<bool> {
        recipients::delete(&self.pool, address).await
    }

    async fn opt_out(
        &self,
        address: &str,
        channel: &ChannelName,
        because: Option<RuleEvent>,
    ) -> Result<Preferences> {
        recipients::opt_out(&self.pool, address, channel, because, self.clock.now_ms()).await
    }

    async fn check_writable(&self) -> Result<()> {
        self.usable()?;
        self.trips.one();
        let check = sqlx::query_scalar::<_, bool>(sql::WRITABLE).fetch_one(&self.pool);
        let writable = match tokio::time::timeout(PROBE_TIMEOUT, check).await {
            Ok(Ok(writable)) => writable,
            // A connection the server is closing (it is stopping or restarting) fails its
            // query with the server's last word: say whether the server can be reached at all.
            Ok(Err(e)) if !matches!(e, sqlx::Error::PoolTimedOut) => {
                return Err(match StoreError::from(e) {
                    StoreError::Unavailable(last_word) => StoreError::Unavailable(
                        unreachable_because(&self.connect)
                            .await
                            .unwrap_or(last_word),
                    ),
                    other => other,
                });
            }
            // The pool only says it waited in vain: ask the server why, from a connection of
            // its own (a probe answers within a few seconds, whatever the pool is doing).
            Ok(Err(_)) | Err(_) => {
                let why = unreachable_because(&self.connect).await;
                return Err(StoreError::Unavailable(why.unwrap_or_else(|| {
                    "no connection of the pool answered in time".into()
                })));
            }
        };
        if writable {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the PostgreSQL server is a read-only standby".into(),
            ))
        }
    }
}

/// One line of a notification's timeline, inside the caller's transaction, so a rule's change
/// and its event commit together.
pub(crate) async fn insert_event(conn: &mut PgConnection, e: &RuleEvent) -> Result<()> {
    sqlx::query(sql::INSERT_EVENT)
        .bind(&e.notification)
        .bind(e.at_ms)
        .bind(e.rule.as_str())
        .bind(&e.detail)
        .execute(conn)
        .await?;
    Ok(())
}
