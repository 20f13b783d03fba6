//! Migrations and the read-side queries.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::super::*;
use super::stored;

/// Migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("0001_init.sql"),
    include_str!("0002_failover.sql"),
    include_str!("0003_receipts.sql"),
    include_str!("0004_receipts_once.sql"),
    include_str!("0005_cheaper_writes.sql"),
    include_str!("0006_checked_rows.sql"),
    include_str!("0007_lease_token.sql"),
    include_str!("0008_history.sql"),
    include_str!("0009_ingest_source.sql"),
    include_str!("0010_events.sql"),
    include_str!("0011_recipients.sql"),
    include_str!("0012_dedup_digest.sql"),
    include_str!("0013_escalation.sql"),
    include_str!("0014_lighter_history.sql"),
];

/// Brings the file to the current schema. Runs under `BEGIN IMMEDIATE` so two processes starting
/// at once cannot both migrate.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "queue schema version {version} is newer than this notifyd understands ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Internal(format!("migration {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}

fn parse_state(s: String) -> Result<State> {
    s.parse().map_err(StoreError::Internal)
}

/// The fallback targets a view shows: none when the stored list cannot be read (the row's
/// `last_error` says why, once the claim or the fallback quarantined it).
fn view_fallback(s: Option<String>) -> Vec<FallbackTarget> {
    s.and_then(|s| serde_json::from_str::<Vec<FallbackRoute>>(&s).ok())
        .map(|routes| routes.into_iter().map(|r| r.target).collect())
        .unwrap_or_default()
}

/// A stored priority as a view shows it: one the daemon does not know was claimed as `low`
/// (its `prio_rank` is 2), so it is shown as that.
fn view_priority(s: Option<String>) -> Priority {
    s.and_then(|s| s.parse().ok()).unwrap_or(Priority::Low)
}

/// The columns of a notification as a view shows them.
struct ViewRow {
    id: String,
    channel: String,
    recipient: String,
    state: String,
    priority: Option<String>,
    attempts: u32,
    created_at: i64,
    run_at: i64,
    expires_at: Option<i64>,
    provider_id: Option<String>,
    last_code: Option<String>,
    last_error: Option<String>,
    parent_id: Option<String>,
    fallback: Option<String>,
    source: Option<String>,
    duplicates: u64,
    digest_id: Option<String>,
    digest_key: Option<String>,
}

impl ViewRow {
    /// Reads leniently (see [`stored`]): a view shows what it can of a row another program
    /// wrote, including one quarantined for being unreadable.
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: stored::lossy_string(r, 0)?,
            channel: stored::lossy_string(r, 1)?,
            recipient: stored::lossy_string(r, 2)?,
            state: stored::lossy_string(r, 3)?,
            priority: stored::lossy_text(r, 4)?,
            attempts: stored::lossy_u32(r, 5)?,
            created_at: stored::lossy_int(r, 6)?.unwrap_or(0),
            run_at: stored::lossy_int(r, 7)?.unwrap_or(0),
            expires_at: stored::lossy_int(r, 8)?,
            provider_id: stored::lossy_text(r, 9)?,
            last_code: stored::lossy_text(r, 10)?,
            last_error: stored::lossy_text(r, 11)?,
            parent_id: stored::lossy_text(r, 12)?,
            fallback: stored::lossy_text(r, 13)?,
            source: stored::lossy_text(r, 14)?,
            duplicates: stored::lossy_int(r, 15)?.map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            digest_id: stored::lossy_text(r, 16)?,
            digest_key: stored::lossy_text(r, 17)?,
        })
    }
}

/// One notification with its attempts.
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<NotificationView>> {
    let row = conn
        .prepare_cached(
            "SELECT id, channel, recipient, state, priority, attempts, created_at, run_at,
                    expires_at, provider_id, last_code, last_error, parent_id, fallback, source,
                    duplicates, digest_id, digest_key
             FROM notifications WHERE id = ?1",
        )?
        .query_row(params![id], ViewRow::read)
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let attempt_log = conn
        .prepare_cached(
            "SELECT attempt, started_at, latency_ms, outcome, code, error, provider_id, decision, channel
             FROM attempts WHERE notification_id = ?1 ORDER BY attempt, rowid",
        )?
                .query_map(params![id], attempt_view)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let receipts = conn
        .prepare_cached(
            "SELECT status, provider_status, error_code, received_at FROM receipts
             WHERE notification_id = ?1 ORDER BY received_at, id",
        )?
        .query_map(params![id], |r| {
            Ok(ReceiptView {
                status: r.get(0)?,
                provider_status: r.get(1)?,
                error_code: r.get(2)?,
                received_at_ms: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let events = conn
        .prepare_cached(
            "SELECT at, rule, detail FROM events WHERE notification_id = ?1 ORDER BY at, rowid",
        )?
        .query_map(params![id], |r| {
            Ok(EventView {
                at_ms: r.get(0)?,
                rule: stored::lossy_text(r, 1)?.unwrap_or_default(),
                detail: stored::lossy_text(r, 2)?.unwrap_or_default(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(NotificationView {
        id: row.id.into(),
        channel: row.channel.into(),
        to: row.recipient,
        state: parse_state(row.state)?,
        priority: view_priority(row.priority),
        attempts: row.attempts,
        created_at_ms: row.created_at,
        run_at_ms: row.run_at,
        expires_at_ms: row.expires_at,
        provider_id: row.provider_id,
        last_code: row.last_code,
        last_error: row.last_error,
        parent_id: row.parent_id.map(Into::into),
        fallback: view_fallback(row.fallback),
        source: row.source.and_then(|s| serde_json::from_str(&s).ok()),
        duplicates: row.duplicates,
        digest_id: row.digest_id.map(Into::into),
        digest_key: row.digest_key,
        attempt_log,
        receipts,
        events,
    }))
}

/// The items still waiting in digest `digest_id`, oldest first (read leniently: a column that
/// cannot be read shows as absent).
pub(super) fn digest_items(conn: &Connection, digest_id: &str) -> Result<Vec<DigestItem>> {
    let items = conn
        .prepare_cached(
            "SELECT id, subject, body, html, data, vars, created_at FROM notifications
             WHERE digest_id = ?1 AND state = 'queued' ORDER BY created_at, id",
        )?
        .query_map(params![digest_id], |r| {
            let json = |i| -> rusqlite::Result<Option<serde_json::Value>> {
                Ok(stored::lossy_text(r, i)?.and_then(|s| serde_json::from_str(&s).ok()))
            };
            Ok(DigestItem {
                id: stored::lossy_string(r, 0)?.into(),
                subject: stored::lossy_text(r, 1)?,
                body: stored::lossy_text(r, 2)?,
                html: stored::lossy_text(r, 3)?,
                data: json(4)?,
                vars: json(5)?,
                created_at_ms: stored::lossy_int(r, 6)?.unwrap_or(0),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(items)
}

fn attempt_view(r: &Row<'_>) -> rusqlite::Result<AttemptView> {
    Ok(AttemptView {
        attempt: r.get(0)?,
        started_at_ms: r.get(1)?,
        latency_ms: r.get(2)?,
        outcome: r.get(3)?,
        code: r.get(4)?,
        error: r.get(5)?,
        provider_id: r.get(6)?,
        decision: r.get(7)?,
        channel: r.get(8)?,
    })
}

/// Dead letters, newest first.
pub(super) fn dead_letters(
    conn: &Connection,
    channel: Option<&ChannelName>,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT id, channel, recipient, attempts, last_code, last_error, updated_at
         FROM notifications
         WHERE state = 'dead' AND (?1 IS NULL OR channel = ?1)
         ORDER BY updated_at DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![channel, limit], |r| {
            // Lenient: a dead letter may be a row quarantined for being unreadable.
            Ok(DeadLetter {
                id: stored::lossy_string(r, 0)?.into(),
                channel: stored::lossy_string(r, 1)?.into(),
                to: stored::lossy_string(r, 2)?,
                attempts: stored::lossy_u32(r, 3)?,
                last_code: stored::lossy_text(r, 4)?,
                last_error: stored::lossy_text(r, 5)?,
                died_at_ms: stored::lossy_int(r, 6)?.unwrap_or(0),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Live and dead counts per channel (answered from the partial indexes).
pub(super) fn depth(conn: &Connection) -> Result<Vec<Depth>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT channel, state, count(*) FROM notifications
         WHERE state IN ('queued', 'sending') GROUP BY channel, state",
        "SELECT channel, state, count(*) FROM notifications
         WHERE state = 'dead' GROUP BY channel, state",
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                stored::lossy_string(r, 0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        for row in rows {
            let (channel, state, count) = row?;
            out.push(Depth {
                channel: channel.into(),
                state: parse_state(state)?,
                count,
            });
        }
    }
    Ok(out)
}

/// Per priority of one channel, the oldest due time among rows due now: the first entry of the
/// priority's range in the due index, whatever is scheduled after it (a test checks the plan).
pub(super) const OLDEST_DUE: &str = "SELECT min(run_at) FROM notifications
     WHERE channel = ?1 AND state IN ('queued', 'sending') AND prio_rank = ?2 AND run_at <= ?3";

/// Per channel of `channels` with rows due now, the oldest due time: three index seeks each,
/// where a scan of the due index would step over every live row.
pub(super) fn oldest_due(
    conn: &Connection,
    channels: &[ChannelName],
    now: i64,
) -> Result<Vec<(ChannelName, i64)>> {
    let mut stmt = conn.prepare_cached(OLDEST_DUE)?;
    let mut out = Vec::new();
    for channel in channels {
        let mut oldest: Option<i64> = None;
        for rank in 0..3 {
            let due: Option<i64> = stmt.query_row(params![channel, rank, now], |r| r.get(0))?;
            oldest = match (oldest, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(at) = oldest {
            out.push((channel.clone(), at));
        }
    }
    Ok(out)
}
