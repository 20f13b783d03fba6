//! The SQLite outbox: one file in WAL mode.
//!
//! All writes go through one writer thread that drains every pending request into a single
//! transaction (group commit): concurrent callers share one fsync, and each is answered only
//! after that commit (synced, unless the batch is only claims and completions:
//! [`durability`]). Reads use a small pool of separate connections, which WAL lets run beside
//! the writer.

mod durability;
mod history;
mod recipients;
mod schema;
pub(crate) mod stored;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::recipients::Preferences;
use writer::Op;

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections kept open.
const READERS: usize = 4;

/// Options for opening the SQLite outbox.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    /// Caps the file size in pages (test hook to simulate a full disk).
    pub max_page_count: Option<u64>,
    /// Below this much free space on the queue's filesystem, [`Outbox::check_writable`] fails
    /// (readiness), before the disk is full and writes do.
    pub min_free_bytes: u64,
    /// Where every "now" of the store comes from (a manual one in tests).
    pub clock: Clock,
    /// Reads the free space of the queue's filesystem (`statvfs`; tests stand in for it).
    pub free_space: FreeSpace,
}

/// Reads the free bytes of the filesystem holding a directory.
pub(crate) type FreeSpace = fn(&Path) -> Result<u64>;

/// Free bytes for unprivileged users on the filesystem holding `dir`.
fn filesystem_free_bytes(dir: &Path) -> Result<u64> {
    let stat = rustix::fs::statvfs(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot read free space: {e}")))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The directory of the queue file (whose filesystem's free space counts).
fn queue_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl SqliteOptions {
    /// Defaults for a file path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_page_count: None,
            min_free_bytes: 0,
            clock: Clock::System,
            free_space: filesystem_free_bytes,
        }
    }
}

/// The SQLite implementation of [`Outbox`].
pub struct SqliteOutbox {
    writer: mpsc::Sender<Op>,
    readers: Arc<ReadPool>,
    path: PathBuf,
    /// Dropping it stops the checkpoint thread (after a last checkpoint).
    _checkpointer: std::sync::mpsc::Sender<()>,
    /// The writer's commits and syncs.
    counts: writer::Counts,
    min_free_bytes: u64,
    clock: Clock,
    free_space: FreeSpace,
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL from a thread of its own, so the copy and its fsync never stall a commit
/// (SQLite's automatic checkpoint would run inside the writer's COMMIT, making every caller
/// waiting on that batch wait for it). PASSIVE never blocks the writer; when the outbox closes,
/// a last TRUNCATE checkpoint leaves a small WAL behind.
///
/// SQLite reuses a WAL file from its start but never shrinks it, so after a disk-full episode
/// the WAL would keep its peak size for good. While free space is short, and once more when it
/// is back, the thread truncates the WAL after a PASSIVE checkpoint has copied all of it; without
/// waiting (no busy timeout): a writer in a transaction or a reader on the WAL defers it to the
/// next round, and with nothing left to copy it holds the write lock only for the truncate.
fn spawn_checkpointer(path: &Path, space: SpaceCheck) -> Result<std::sync::mpsc::Sender<()>> {
    let conn = open_connection(path, true)?;
    conn.busy_timeout(Duration::ZERO)
        .map_err(StoreError::from)?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("notifyd-checkpoint".into())
        .spawn(move || {
            let mut truncate_pending = false;
            loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let copied_all = match checkpoint(&conn, "PASSIVE") {
                            Ok(c) => c.copied_all(),
                            Err(e) => {
                                tracing::warn!(error = %e, "WAL checkpoint failed; will try again.");
                                false
                            }
                        };
                        let short = space.short();
                        truncate_pending |= short;
                        let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                        if truncate_pending && wal_bytes == 0 {
                            truncate_pending = short;
                        } else if truncate_pending
                            && copied_all
                            && checkpoint(&conn, "TRUNCATE").is_ok_and(|c| !c.busy)
                        {
                            truncate_pending = short;
                            tracing::info!(
                                freed_bytes = wal_bytes,
                                "Truncated the WAL after free space ran short."
                            );
                        }
                    }
                    _ => {
                        let _ = conn.busy_timeout(BUSY_TIMEOUT);
                        let _ = checkpoint(&conn, "TRUNCATE");
                        return;
                    }
                }
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(stop)
}

/// What `PRAGMA wal_checkpoint` reports.
struct Checkpoint {
    /// A TRUNCATE (or FULL, RESTART) could not finish for a writer or reader.
    busy: bool,
    /// Frames in the WAL.
    frames: i64,
    /// Frames copied into the database file.
    copied: i64,
}

impl Checkpoint {
    /// Every frame of the WAL is in the database file: truncating it loses nothing.
    fn copied_all(&self) -> bool {
        !self.busy && self.frames == self.copied
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> Result<Checkpoint> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpoint {
            busy: r.get::<_, i64>(0)? != 0,
            frames: r.get(1)?,
            copied: r.get(2)?,
        })
    })
    .map_err(StoreError::from)
}

/// Whether the queue's filesystem is short of free space (below `queue.min_free_bytes`, or
/// full when that is 0).
struct SpaceCheck {
    dir: PathBuf,
    min_free_bytes: u64,
    free_space: FreeSpace,
}

impl SpaceCheck {
    fn short(&self) -> bool {
        (self.free_space)(&self.dir).is_ok_and(|free| free < self.min_free_bytes.max(1))
    }
}

impl std::fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutbox")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteOutbox {
    /// Opens (creating if needed) and migrates the queue file, and starts its writer thread.
    pub fn open(opts: &SqliteOptions) -> Result<Self> {
        if let Some(dir) = opts.path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            return Err(StoreError::Unavailable(format!(
                "directory {} does not exist",
                dir.display()
            )));
        }
        let mut conn = open_connection(&opts.path, false)?;
        schema::migrate(&mut conn)?;
        if let Some(pages) = opts.max_page_count {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(StoreError::from)?;
        }
        configure_writer(&conn)?;
        let counts = writer::Counts::default();
        let writer = writer::spawn(conn, owner_id(), counts.clone(), opts.clock.clone())?;
        let checkpointer = spawn_checkpointer(
            &opts.path,
            SpaceCheck {
                dir: queue_dir(&opts.path),
                min_free_bytes: opts.min_free_bytes,
                free_space: opts.free_space,
            },
        )?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(&opts.path, true)?);
        }
        Ok(Self {
            writer,
            readers: Arc::new(ReadPool {
                conns: Mutex::new(readers),
                path: opts.path.clone(),
            }),
            path: opts.path.clone(),
            _checkpointer: checkpointer,
            counts,
            min_free_bytes: opts.min_free_bytes,
            clock: opts.clock.clone(),
            free_space: opts.free_space,
        })
    }

    /// Transactions the writer has committed: against the number of writes, how much group
    /// commit shares its fsyncs.
    pub fn commits(&self) -> u64 {
        self.counts
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Points at which every commit so far was on disk: commits synced as they were made, and
    /// the writer's syncs of what claims and completions deferred.
    pub fn syncs(&self) -> u64 {
        self.counts.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Unavailable("queue writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("queue writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

/// A unique name for this process's leases, so completions are fenced to their owner.
fn owner_id() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Settings of the one connection that writes (on top of [`open_connection`]'s).
fn configure_writer(conn: &Connection) -> Result<()> {
    // Checkpoints happen on their own thread (spawn_checkpointer), never inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // The schema's CHECKs guard the table contract against other programs' plain SQL. This
    // connection writes only typed values, and SQLite builds a temporary b-tree for the 7-value
    // state CHECK on every insert and state change.
    conn.pragma_update(None, "ignore_check_constraints", true)?;
    // Plans that never depend on bound values: without this, the claim is re-planned on every
    // call because its time parameter changes. Every partial index is matched by the literal
    // terms of its queries, so no plan needs a value (tests check the hot statements' plans).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // A statement that changes many rows (a claim of hundreds, a sweep) keeps a statement
    // journal, so that it can be undone alone; past 64 KiB SQLite moves it to a temporary file,
    // created, written page by page and deleted again within the statement (measured under
    // `notifyd bench`: a file created and unlinked every 150 delivered notifications, and
    // pages written to it beside the WAL's). In memory it lives as long as the statement and
    // is as large as the pages that one statement changed.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Room for every statement the writer runs (about forty), so a sweep's or a receipt's
    // statements never push the hot ones (insert, claim, completions) out of rusqlite's
    // default cache of 16 and make the next batch prepare them again.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(StoreError::from)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(StoreError::from)?;
    if !read_only {
        // WAL lets readers and other processes work beside the writer; FULL fsyncs every commit,
        // so "accepted" survives power loss, not only a crash.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(StoreError::from)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "cannot use WAL journal mode (got {mode})"
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(StoreError::from)?;
    Ok(conn)
}

/// Read connections handed out one at a time.
struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl ReadPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let taken = self.conns.lock().ok().and_then(|mut v| v.pop());
        let conn = match taken {
            Some(c) => c,
            None => open_connection(&self.path, true)?,
        };
        let out = f(&conn);
        if let Ok(mut v) = self.conns.lock()
            && v.len() < READERS
        {
            v.push(conn);
        }
        out
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(
                C::DiskFull
                | C::ReadOnly
                | C::SystemIoFailure
                | C::CannotOpen
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::OutOfMemory
                | C::NotADatabase
                | C::PermissionDenied,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn enqueue(&self, items: Vec<NewNotification>) -> Result<Vec<Enqueued>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Op::Enqueue { items, reply }).await
    }

    async fn find_key(&self, key: &str) -> Result<Option<KeyHolder>> {
        let key = key.to_owned();
        self.read(move |conn| key_holder(conn, &key)).await
    }

    async fn claim(
        &self,
        channel: &ChannelName,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let channel = channel.as_str().to_owned();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.call(|reply| Op::Claim {
            channel,
            limit,
            lease_ms,
            reply,
        })
        .await
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<()> {
        if completions.is_empty() {
            return Ok(());
        }
        self.call(|reply| Op::Complete { completions, reply }).await
    }

    async fn get(&self, id: &NotificationId) -> Result<Option<NotificationView>> {
        let id = id.clone();
        self.read(move |conn| schema::get(conn, &id)).await
    }

    async fn cancel(&self, id: &NotificationId) -> Result<Transition> {
        let id = id.as_str().to_owned();
        self.call(|reply| Op::Cancel { id, reply }).await
    }

    async fn dead_letters(
        &self,
        channel: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let channel = channel.cloned();
        self.read(move |conn| schema::dead_letters(conn, channel.as_ref(), limit))
            .await
    }

    async fn replay(&self, id: &NotificationId) -> Result<Transition> {
        let id = id.as_str().to_owned();
        self.call(|reply| Op::Replay { id, reply }).await
    }

    async fn depth(&self) -> Result<Vec<Depth>> {
        self.read(schema::depth).await
    }

    async fn oldest_due(&self, channels: &[ChannelName]) -> Result<Vec<(ChannelName, i64)>> {
        let channels = channels.to_vec();
        let now = self.clock.now_ms();
        self.read(move |conn| schema::oldest_due(conn, &channels, now))
            .await
    }

    async fn move_due(
        &self,
        channel: &ChannelName,
        how: OpenBreakerMove,
        limit: usize,
    ) -> Result<u64> {
        let channel = channel.as_str().to_owned();
        self.call(|reply| Op::MoveDue {
            channel,
            how,
            limit,
            reply,
        })
        .await
    }

    async fn sweep(
        &self,
        known_channels: &[ChannelName],
        retention: &Retention,
    ) -> Result<SweepReport> {
        let known = known_channels
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        let mut report = self
            .call(|reply| Op::Sweep {
                known,
                retention: retention.clone(),
                reply,
            })
            .await?;
        // Each further batch is a request of its own: other writes get their turn in between.
        let mut full = sweep::purge_again(report.purged, report.receipts_purged);
        let mut batches = 1;
        while full && batches < sweep::PURGE_BATCHES_PER_SWEEP {
            let retention = retention.clone();
            let more = self.call(|reply| Op::Purge { retention, reply }).await?;
            report.purged += more.notifications;
            report.receipts_purged += more.receipts;
            full = more.full();
            batches += 1;
        }
        Ok(report)
    }

    async fn record_receipt(&self, receipt: InboundReceipt) -> Result<RecordedReceipt> {
        self.call(|reply| Op::Receipt { receipt, reply }).await
    }

    async fn record_events(&self, events: Vec<RuleEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.call(|reply| Op::RecordEvents { events, reply }).await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage> {
        let query = query.clone();
        self.read(move |conn| history::page(conn, &query)).await
    }

    async fn digest_items(&self, digest_id: &NotificationId) -> Result<Vec<DigestItem>> {
        let id = digest_id.clone();
        self.read(move |conn| schema::digest_items(conn, &id)).await
    }

    async fn content(&self, id: &NotificationId) -> Result<Option<Content>> {
        let id = id.clone();
        self.read(move |conn| history::content(conn, &id)).await
    }

    async fn put_preferences(&self, address: &str, prefs: &Preferences) -> Result<()> {
        let (address, prefs) = (address.to_owned(), prefs.clone());
        self.call(|reply| Op::PutPreferences {
            address,
            prefs,
            reply,
        })
        .await
    }

    async fn preferences(&self, addresses: &[String]) -> Result<Vec<(String, Preferences)>> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let addresses = addresses.to_vec();
        self.read(move |conn| recipients::read(conn, &addresses))
            .await
    }

    async fn delete_preferences(&self, address: &str) -> Result<bool> {
        let address = address.to_owned();
        self.call(|reply| Op::DeletePreferences { address, reply })
            .await
    }

    async fn opt_out(
        &self,
        address: &str,
        channel: &ChannelName,
        because: Option<RuleEvent>,
    ) -> Result<Preferences> {
        let (address, channel) = (address.to_owned(), channel.as_str().to_owned());
        self.call(|reply| Op::OptOut {
            address,
            channel,
            because,
            reply,
        })
        .await
    }

    async fn acknowledge(&self, id: &NotificationId, source: AckSource) -> Result<Acknowledged> {
        let id = id.as_str().to_owned();
        self.call(|reply| Op::Acknowledge { id, source, reply })
            .await
    }

    async fn check_writable(&self) -> Result<()> {
        self.call(|reply| Op::Ping { reply }).await?;
        // An empty transaction commits on a full disk, and a write may still fit in the WAL's
        // old frames: free space is what says the next batch will fit.
        let free = (self.free_space)(&queue_dir(&self.path))?;
        if free < self.min_free_bytes {
            return Err(StoreError::Unavailable(format!(
                "{free} bytes free on the queue's filesystem, below queue.min_free_bytes ({})",
                self.min_free_bytes
            )));
        }
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The notification stored under an idempotency key (read by the writer and by replays).
pub(crate) fn key_holder(conn: &Connection, key: &str) -> Result<Option<KeyHolder>> {
    let row: Option<(String, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, state, content_hash FROM notifications WHERE idempotency_key = ?1",
        )?
        .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(id, state, content_hash)| {
        Ok(KeyHolder {
            id: id.into(),
            state: state.parse().map_err(StoreError::Internal)?,
            content_hash,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unreadable_tests;
