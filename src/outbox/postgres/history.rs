//! The history search on PostgreSQL: one range of a `0003_history.sql` index, walked newest
//! first, by [`sql::HISTORY`].

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::{clamp_u32, parse_state, sql};
use crate::outbox::*;

/// One page of the history.
pub async fn page(pool: &PgPool, q: &HistoryQuery) -> Result<HistoryPage> {
    let f = &q.filter;
    let walk = i64::try_from(q.walk_bound()).unwrap_or(i64::MAX);
    // Planned with its values each time (not a prepared plan): the filters not given fold away
    // and the index is picked for the ones that are.
    let rows = sqlx::query(sql::HISTORY)
        .persistent(false)
        .bind(f.state.map(State::as_str))
        .bind(f.channel.as_deref())
        .bind(f.recipient.as_deref())
        .bind(f.fallback_of.as_deref())
        .bind(f.priority.map(Priority::as_str))
        .bind(f.created_after_ms)
        .bind(f.created_before_ms)
        .bind(f.updated_after_ms)
        .bind(f.updated_before_ms)
        .bind(f.subject_contains.as_deref().map(str::to_ascii_lowercase))
        .bind(q.after.as_ref().map(|c| c.created_at_ms))
        .bind(q.after.as_ref().map(|c| c.id.as_str()))
        .bind(walk)
        // One match more than the page says there is more; the walk's last row may follow.
        .bind(i64::try_from(q.limit.saturating_add(2)).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    let mut matches = Vec::with_capacity(rows.len());
    let mut stopped_at = None;
    for r in &rows {
        let item = item(r)?;
        if r.try_get::<i64, _>("walked")? == walk {
            stopped_at = Some(HistoryCursor::after(&item));
        }
        if r.try_get("hit")? {
            matches.push(item);
        }
    }
    Ok(HistoryPage::from_walk(matches, stopped_at, q.limit))
}

fn item(r: &PgRow) -> Result<HistoryItem> {
    let state: String = r.try_get("state")?;
    let priority: String = r.try_get("priority")?;
    Ok(HistoryItem {
        id: r.try_get("id")?,
        channel: r.try_get("channel")?,
        to: r.try_get("recipient")?,
        state: parse_state(&state)?,
        priority: priority.parse().map_err(StoreError::Internal)?,
        attempts: clamp_u32(r.try_get("attempts")?),
        subject: r.try_get("subject")?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
        parent_id: r.try_get("parent_id")?,
        last_code: r.try_get("last_code")?,
    })
}

/// What a notification says (subject, bodies, data), for the console's detail page.
pub async fn content(pool: &PgPool, id: &str) -> Result<Option<Content>> {
    let row = sqlx::query(sql::CONTENT)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(Content {
            subject: r.try_get("subject")?,
            body: r.try_get("body")?,
            html: r.try_get("html")?,
            data: r.try_get("data")?,
        })
    })
    .transpose()
}
