//! Reading a claimed row strictly. PostgreSQL enforces the column types, encodings and the
//! CHECKs, so what another program's plain SQL can still get wrong is a JSON column of the wrong
//! shape and a number out of the range the daemon uses; a failure names the column, so the row
//! is quarantined on its own with a reason (as on SQLite).

use std::ops::RangeInclusive;

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::outbox::sqlite::stored::Unreadable;

fn unreadable(column: &'static str, problem: impl Into<String>) -> Unreadable {
    Unreadable {
        column,
        problem: problem.into(),
    }
}

/// A column of type `T` (a bug in the statement if it is not).
pub(super) fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, Unreadable>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|e| unreadable(column, e.to_string()))
}

/// An integer within `range`.
pub(super) fn int(
    row: &PgRow,
    column: &'static str,
    range: RangeInclusive<i64>,
) -> Result<i64, Unreadable> {
    let n: i64 = get(row, column)?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(unreadable(
            column,
            format!("{n} is out of range ({} to {})", range.start(), range.end()),
        ))
    }
}

/// A JSON column of the shape `T`, or NULL.
pub(super) fn opt_json<T: DeserializeOwned>(
    row: &PgRow,
    column: &'static str,
) -> Result<Option<T>, Unreadable> {
    match get::<Option<serde_json::Value>>(row, column)? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| unreadable(column, format!("not the JSON this daemon reads ({e})"))),
    }
}
