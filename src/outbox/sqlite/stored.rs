//! Reading values another program may have written. Rows the dispatcher is about to trust are
//! read strictly: each column is checked for its type, its encoding, its range and (for JSON
//! columns) its shape, and a failure names the column, so the row can be quarantined on its
//! own with a reason. Views (`GET`, dead letters, depth) read leniently instead: they show what
//! they can, so the row that was quarantined for being unreadable can still be looked at.

use std::ops::RangeInclusive;

use rusqlite::Row;
use rusqlite::types::ValueRef;
use serde::de::DeserializeOwned;

/// Why a stored row cannot be used, naming the column: the reason a quarantined row shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column}: {problem}")]
pub(crate) struct Unreadable {
    pub column: &'static str,
    pub problem: String,
}

impl Unreadable {
    fn new(column: &'static str, problem: impl Into<String>) -> Self {
        Self {
            column,
            problem: problem.into(),
        }
    }
}

/// The value of column `i`, or a reason naming `column` when the index itself is wrong (a bug).
fn value<'r>(row: &'r Row<'_>, i: usize, column: &'static str) -> Result<ValueRef<'r>, Unreadable> {
    row.get_ref(i)
        .map_err(|e| Unreadable::new(column, e.to_string()))
}

/// SQLite's name of a value's storage class, as a reason says it.
fn class(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an INTEGER",
        ValueRef::Real(_) => "a REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "a BLOB",
    }
}

/// Text that may be NULL; anything but UTF-8 text is unreadable.
pub(crate) fn opt_text(
    row: &Row<'_>,
    i: usize,
    column: &'static str,
) -> Result<Option<String>, Unreadable> {
    match value(row, i, column)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(|s| Some(s.to_owned()))
            .map_err(|e| Unreadable::new(column, format!("not UTF-8 text ({e})"))),
        other => Err(Unreadable::new(
            column,
            format!("{} where TEXT belongs", class(other)),
        )),
    }
}

/// Text that must be there.
pub(crate) fn text(row: &Row<'_>, i: usize, column: &'static str) -> Result<String, Unreadable> {
    opt_text(row, i, column)?.ok_or_else(|| Unreadable::new(column, "NULL where TEXT belongs"))
}

/// An integer within `range`, or NULL.
pub(crate) fn opt_int(
    row: &Row<'_>,
    i: usize,
    column: &'static str,
    range: RangeInclusive<i64>,
) -> Result<Option<i64>, Unreadable> {
    match value(row, i, column)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) if range.contains(&n) => Ok(Some(n)),
        ValueRef::Integer(n) => Err(Unreadable::new(
            column,
            format!("{n} is out of range ({} to {})", range.start(), range.end()),
        )),
        other => Err(Unreadable::new(
            column,
            format!("{} where an INTEGER belongs", class(other)),
        )),
    }
}

/// An integer within `range` that must be there.
pub(crate) fn int(
    row: &Row<'_>,
    i: usize,
    column: &'static str,
    range: RangeInclusive<i64>,
) -> Result<i64, Unreadable> {
    opt_int(row, i, column, range)?
        .ok_or_else(|| Unreadable::new(column, "NULL where an INTEGER belongs"))
}

/// JSON text of the shape `T`, or NULL.
pub(crate) fn opt_json<T: DeserializeOwned>(
    row: &Row<'_>,
    i: usize,
    column: &'static str,
) -> Result<Option<T>, Unreadable> {
    match opt_text(row, i, column)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Unreadable::new(column, format!("not the JSON this daemon reads ({e})"))),
    }
}

/// Whatever column `i` holds, as text a person can read: UTF-8 with the bad bytes replaced,
/// numbers written out, a BLOB as its text. `None` for NULL.
pub(crate) fn lossy_text(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    })
}

/// [`lossy_text`] for a column that is never NULL in a readable row.
pub(crate) fn lossy_string(row: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(lossy_text(row, i)?.unwrap_or_default())
}

/// Whatever column `i` holds, as an integer where it is one (a REAL truncated, numeric TEXT
/// parsed); `None` otherwise.
pub(crate) fn lossy_int(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<i64>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(n) => Some(n),
        // `as` saturates: a REAL out of i64's range shows as its nearest bound.
        ValueRef::Real(x) if x.is_finite() => Some(x as i64),
        ValueRef::Text(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        _ => None,
    })
}

/// [`lossy_int`] clamped into a `u32` (an attempt counter), 0 when it is not a number.
pub(crate) fn lossy_u32(row: &Row<'_>, i: usize) -> rusqlite::Result<u32> {
    let n = lossy_int(row, i)?.unwrap_or(0);
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}
