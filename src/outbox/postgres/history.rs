//! The history search on PostgreSQL: one range of a `0003_history.sql` index, walked newest
//! first, by [`sql::HISTORY`].

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row, SqlSafeStr};

use super::{clamp_u32, parse_state, sql};
use crate::outbox::*;

/// One page of the history.
pub(super) async fn page(pool: &super::Pool, q: &HistoryQuery) -> Result<HistoryPage> {
    let walk = i64::try_from(q.walk_bound()).unwrap_or(i64::MAX);
    let rows = bound(sql::HISTORY, q).fetch_all(pool).await?;
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

/// `statement` (the history's, or a plan of it) with the values of `q`, planned with them each
/// time (not a prepared plan): the filters not given fold away and the index is picked for the
/// ones that are.
fn bound(statement: impl SqlSafeStr, q: &HistoryQuery) -> Query<'static, Postgres, PgArguments> {
    let f = &q.filter;
    sqlx::query(statement)
        .persistent(false)
        .bind(f.state.map(State::as_str))
        .bind(f.channel.clone())
        .bind(f.recipient.clone())
        .bind(f.fallback_of.clone())
        .bind(f.priority.map(Priority::as_str))
        .bind(f.created_after_ms)
        .bind(f.created_before_ms)
        .bind(f.updated_after_ms)
        .bind(f.updated_before_ms)
        .bind(f.subject_contains.as_deref().map(str::to_ascii_lowercase))
        .bind(q.after.as_ref().map(|c| c.created_at_ms))
        .bind(q.after.as_ref().map(|c| c.id.clone()))
        .bind(i64::try_from(q.walk_bound()).unwrap_or(i64::MAX))
        // One match more than the page says there is more; the walk's last row may follow.
        .bind(i64::try_from(q.limit.saturating_add(2)).unwrap_or(i64::MAX))
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
pub(super) async fn content(pool: &super::Pool, id: &str) -> Result<Option<Content>> {
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

#[cfg(test)]
mod tests {
    //! The plans of history pages on a filled queue, on the machine's PostgreSQL
    //! (`NOTIFYD_TEST_POSTGRES`); without one a developer's run skips, CI fails.

    use super::super::test_queue::TestQueue;
    use super::*;

    /// A queue in a schema of its own, dropped at the end.
    struct Filled {
        queue: TestQueue,
    }

    impl Filled {
        /// 100,000 rows over 8 channels (and a rare one, `pager`) and 50,000 recipients, most
        /// delivered, analysed.
        async fn open() -> Option<Self> {
            let filled = Self {
                queue: TestQueue::open().await?,
            };
            for statement in [
                "INSERT INTO notifications (id, channel, recipient, subject, body, priority,
                     state, created_at, run_at, updated_at, parent_id, checked)
                 SELECT md5(i::text),
                     CASE WHEN i % 1000 = 7 THEN 'pager' ELSE 'ch' || (i % 8) END, 'user' || (i % 50000) || '@example.com',
                     'Order ' || i || ' shipped', 'body',
                     CASE WHEN i % 10 = 0 THEN 'high' ELSE 'normal' END,
                     CASE WHEN i % 100 = 0 THEN 'dead' WHEN i % 100 = 1 THEN 'failed'
                          WHEN i > 99000 THEN 'queued' ELSE 'delivered' END,
                     1700000000000 + i * 10, 1700000000000 + i * 10, 1700000000000 + i * 10,
                     CASE WHEN i % 50 = 0 THEN md5((i - 1)::text) END, true
                 FROM generate_series(1, 100000) AS i",
                "ANALYZE notifications",
            ] {
                sqlx::query(statement)
                    .execute(&filled.queue.outbox.pool)
                    .await
                    .unwrap();
            }
            Some(filled)
        }

        /// The plan of the page `filter` asks for, after a cursor.
        async fn plan(&self, filter: HistoryFilter) -> String {
            let q = HistoryQuery {
                filter,
                after: Some(HistoryCursor {
                    created_at_ms: 1_700_000_900_000,
                    id: "x".into(),
                }),
                limit: 50,
                max_walk: MAX_WALK,
            };
            let explain = format!("EXPLAIN (COSTS OFF) {}", sql::HISTORY);
            let lines: Vec<String> = bound(sqlx::AssertSqlSafe(explain), &q)
                .fetch_all(&self.queue.outbox.pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            lines.join("\n")
        }

        /// Walks `index` in order: no sort of the matching rows, however many there are.
        async fn assert_walks(&self, filter: HistoryFilter, index: &str) {
            let plan = self.plan(filter).await;
            assert!(
                plan.contains(&format!("Index Scan Backward using {index} on")),
                "{plan}"
            );
            assert!(!plan.contains("Sort"), "{plan}");
        }
    }

    #[tokio::test]
    async fn each_history_page_walks_its_index_in_order() {
        let Some(q) = Filled::open().await else {
            return;
        };
        let f = HistoryFilter::default;
        q.assert_walks(f(), "notifications_history").await;
        q.assert_walks(
            HistoryFilter {
                priority: Some(Priority::High),
                subject_contains: Some("Order 7".into()),
                updated_after_ms: Some(1),
                ..f()
            },
            "notifications_history",
        )
        .await;
        q.assert_walks(
            HistoryFilter {
                created_after_ms: Some(1_700_000_100_000),
                created_before_ms: Some(1_700_000_200_000),
                ..f()
            },
            "notifications_history",
        )
        .await;
        // A common channel's rows are as soon found along the creation index (the planner
        // knows each channel's share); a rare one's are read from its own.
        q.assert_walks(
            HistoryFilter {
                channel: Some("pager".into()),
                created_after_ms: Some(1_700_000_100_000),
                ..f()
            },
            "notifications_history_channel",
        )
        .await;
        for state in [State::Dead, State::Failed, State::Cancelled] {
            q.assert_walks(
                HistoryFilter {
                    state: Some(state),
                    ..f()
                },
                "notifications_history_state",
            )
            .await;
        }
        // Live rows are in no state index (a claim moves no entry there): a page of queued
        // rows is read from the live rows' index or along the creation index.
        let queued = q
            .plan(HistoryFilter {
                state: Some(State::Queued),
                ..f()
            })
            .await;
        assert!(!queued.contains("notifications_history_state"), "{queued}");
        assert!(
            queued.contains("notifications_due") || queued.contains("notifications_history on"),
            "{queued}"
        );
        q.assert_walks(
            HistoryFilter {
                fallback_of: Some("c4ca4238a0b923820dcc509a6f75849b".into()),
                ..f()
            },
            "notifications_history_fallback",
        )
        .await;
    }

    #[tokio::test]
    async fn a_channel_and_a_state_walk_their_own_range() {
        let Some(q) = Filled::open().await else {
            return;
        };
        // A backlog: 3,000 rows queued on each of the 8 channels, older than the cursor.
        for statement in [
            "INSERT INTO notifications (id, channel, recipient, body, state, created_at, run_at,
                 updated_at, checked)
             SELECT 'backlog-' || j, 'ch' || (j % 8), 'user' || j || '@example.com', 'body',
                 'queued', 1700000000005 + j * 10, 1700000000005 + j * 10,
                 1700000000005 + j * 10, true
             FROM generate_series(1, 24000) AS j",
            "ANALYZE notifications",
        ] {
            sqlx::query(statement)
                .execute(&q.queue.outbox.pool)
                .await
                .unwrap();
        }
        // Not the claim's due index, which holds them too but by channel and due time: read
        // whole and sorted, that took 30-50 ms a page on a million-row queue (0010).
        q.assert_walks(
            HistoryFilter {
                state: Some(State::Queued),
                channel: Some("ch4".into()),
                ..HistoryFilter::default()
            },
            "notifications_history_channel_state",
        )
        .await;
    }

    #[tokio::test]
    async fn a_recipient_page_reads_only_that_recipients_rows() {
        let Some(q) = Filled::open().await else {
            return;
        };
        let plan = q
            .plan(HistoryFilter {
                recipient: Some("user7@example.com".into()),
                channel: Some("ch7".into()),
                ..HistoryFilter::default()
            })
            .await;
        assert!(
            plan.contains("Index Cond: ((recipient = 'user7@example.com'::text)"),
            "{plan}"
        );
        assert!(plan.contains("notifications_history_recipient"), "{plan}");
    }
}
