//! Recipient preferences on PostgreSQL: one row per normalized address, the preferences as
//! jsonb (sent and read as text, decoded by serde like SQLite's).

use sqlx::Row;

use super::pool::Pool;

use super::super::{Result, RuleEvent, StoreError};
use crate::recipients::Preferences;

const PUT: &str = "INSERT INTO recipients (address, preferences, updated_at)
     VALUES ($1, $2::jsonb, $3)
     ON CONFLICT (address) DO UPDATE SET preferences = $2::jsonb, updated_at = $3";

const DELETE: &str = "DELETE FROM recipients WHERE address = $1";

/// The row an opt-out changes, created empty if missing, then locked until the commit: two
/// opt-outs of one address at once both land.
const ENSURE: &str = "INSERT INTO recipients (address, preferences, updated_at)
     VALUES ($1, $2::jsonb, $3) ON CONFLICT (address) DO NOTHING";
const LOCK_ONE: &str = "SELECT preferences::text FROM recipients WHERE address = $1 FOR UPDATE";

const MANY: &str = "SELECT address, preferences::text FROM recipients
     WHERE address = ANY($1::text[])";

fn encode(prefs: &Preferences) -> String {
    prefs.to_stored()
}

/// Preferences as stored under `address`.
pub(super) fn decode(address: &str, json: &str) -> Result<Preferences> {
    Preferences::from_stored(address, json).map_err(StoreError::Internal)
}

pub(super) async fn put(pool: &Pool, address: &str, prefs: &Preferences, now: i64) -> Result<()> {
    sqlx::query(PUT)
        .bind(address)
        .bind(encode(prefs))
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn delete(pool: &Pool, address: &str) -> Result<bool> {
    let done = sqlx::query(DELETE).bind(address).execute(pool).await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn opt_out(
    pool: &Pool,
    address: &str,
    channel: &str,
    because: Option<RuleEvent>,
    now: i64,
) -> Result<Preferences> {
    let mut tx = pool.begin().await?;
    sqlx::query(ENSURE)
        .bind(address)
        .bind(encode(&Preferences::default()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let json: String = sqlx::query_scalar(LOCK_ONE)
        .bind(address)
        .fetch_one(&mut *tx)
        .await?;
    let mut prefs = decode(address, &json)?;
    prefs.opt_out(channel);
    sqlx::query(PUT)
        .bind(address)
        .bind(encode(&prefs))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if let Some(e) = &because {
        super::insert_event(&mut tx, e).await?;
    }
    tx.commit().await?;
    Ok(prefs)
}

pub(super) async fn read(pool: &Pool, addresses: &[String]) -> Result<Vec<(String, Preferences)>> {
    let rows = sqlx::query(MANY).bind(addresses).fetch_all(pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let address: String = r.try_get(0)?;
        let json: String = r.try_get(1)?;
        let prefs = decode(&address, &json)?;
        out.push((address, prefs));
    }
    Ok(out)
}
