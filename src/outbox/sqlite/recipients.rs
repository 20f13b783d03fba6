//! Recipient preferences on SQLite: one row per normalized address, the preferences as JSON.
//! Writes run on the writer thread (in its group commit), reads on a read connection.

use rusqlite::{Connection, OptionalExtension, params};

use super::super::{Result, StoreError};
use crate::recipients::Preferences;

const PUT: &str = "INSERT INTO recipients (address, preferences, updated_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (address) DO UPDATE SET preferences = ?2, updated_at = ?3";

const DELETE: &str = "DELETE FROM recipients WHERE address = ?1";

const ONE: &str = "SELECT preferences FROM recipients WHERE address = ?1";

/// The rows of every address in a JSON array, by primary key.
const MANY: &str = "SELECT address, preferences FROM recipients
     WHERE address IN (SELECT value FROM json_each(?1))";

fn encode(prefs: &Preferences) -> Result<String> {
    serde_json::to_string(prefs).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Stored preferences as the model reads them; only notifyd writes them, so one that does not
/// read is a bug or a hand edit, reported with its address.
fn decode(address: &str, json: &str) -> Result<Preferences> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Internal(format!("stored preferences of {address:?} unreadable: {e}"))
    })
}

pub(super) fn put(conn: &Connection, address: &str, prefs: &Preferences, now: i64) -> Result<()> {
    conn.prepare_cached(PUT)?
        .execute(params![address, encode(prefs)?, now])?;
    Ok(())
}

pub(super) fn delete(conn: &Connection, address: &str) -> Result<bool> {
    Ok(conn.prepare_cached(DELETE)?.execute(params![address])? == 1)
}

/// Read, add the channel, write back: atomic on the one writer thread.
pub(super) fn opt_out(
    conn: &Connection,
    address: &str,
    channel: &str,
    now: i64,
) -> Result<Preferences> {
    let stored: Option<String> = conn
        .prepare_cached(ONE)?
        .query_row(params![address], |r| r.get(0))
        .optional()?;
    let mut prefs = match stored {
        Some(json) => decode(address, &json)?,
        None => Preferences::default(),
    };
    prefs.opt_out(channel);
    put(conn, address, &prefs, now)?;
    Ok(prefs)
}

pub(super) fn read(conn: &Connection, addresses: &[String]) -> Result<Vec<(String, Preferences)>> {
    let list = serde_json::to_string(addresses).map_err(|e| StoreError::Internal(e.to_string()))?;
    let mut stmt = conn.prepare_cached(MANY)?;
    let rows = stmt.query_map(params![list], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (address, json) = row?;
        let prefs = decode(&address, &json)?;
        out.push((address, prefs));
    }
    Ok(out)
}
