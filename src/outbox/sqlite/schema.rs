//! Migrations and the read-side queries.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::super::*;

/// Migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("0001_init.sql"),
    include_str!("0002_failover.sql"),
    include_str!("0003_receipts.sql"),
    include_str!("0004_receipts_once.sql"),
    include_str!("0005_cheaper_writes.sql"),
    include_str!("0008_history.sql"),
];

/// Brings the file to the current schema. Runs under `BEGIN IMMEDIATE` so two processes starting
/// at once cannot both migrate.
pub fn migrate(conn: &mut Connection) -> Result<()> {
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

fn parse_fallback(s: Option<String>) -> Result<Vec<FallbackTarget>> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str::<Vec<FallbackRoute>>(&s)
            .map(|routes| routes.into_iter().map(|r| r.target).collect())
            .map_err(|e| StoreError::Internal(format!("bad fallback JSON: {e}"))),
    }
}

/// One notification with its attempts.
pub fn get(conn: &Connection, id: &str) -> Result<Option<NotificationView>> {
    let row = conn
        .prepare_cached(
            "SELECT id, channel, recipient, state, priority, attempts, created_at, run_at,
                    expires_at, provider_id, last_code, last_error, parent_id, fallback
             FROM notifications WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, Option<String>>(13)?,
            ))
        })
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
    Ok(Some(NotificationView {
        id: row.0,
        channel: row.1,
        to: row.2,
        state: parse_state(row.3)?,
        priority: row.4.parse().map_err(StoreError::Internal)?,
        attempts: row.5,
        created_at_ms: row.6,
        run_at_ms: row.7,
        expires_at_ms: row.8,
        provider_id: row.9,
        last_code: row.10,
        last_error: row.11,
        parent_id: row.12,
        fallback: parse_fallback(row.13)?,
        attempt_log,
        receipts,
    }))
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
pub fn dead_letters(
    conn: &Connection,
    channel: Option<&str>,
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
            Ok(DeadLetter {
                id: r.get(0)?,
                channel: r.get(1)?,
                to: r.get(2)?,
                attempts: r.get(3)?,
                last_code: r.get(4)?,
                last_error: r.get(5)?,
                died_at_ms: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Live and dead counts per channel (answered from the partial indexes).
pub fn depth(conn: &Connection) -> Result<Vec<Depth>> {
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
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        for row in rows {
            let (channel, state, count) = row?;
            out.push(Depth {
                channel,
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
pub fn oldest_due(conn: &Connection, channels: &[String]) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(OLDEST_DUE)?;
    let now = now_ms();
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
