//! The history search in SQL: one range of a `0008_history.sql` index (the state index is
//! `0014_lighter_history.sql`'s), walked newest first.

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::super::*;

/// The columns a history row shows, then whether the row passes the filters checked on each
/// row walked.
const COLUMNS: &str = "SELECT id, channel, recipient, state, priority, attempts, subject,
        created_at, updated_at, parent_id, last_code";

/// The condition of `notifications_history_ended` (`0014_lighter_history.sql`), repeated
/// literally by a page of one of those states so that SQLite may walk that index.
const ENDED: &str = "(state IN ('failed', 'dead') OR state IN ('expired', 'cancelled'))";

/// The statement and its bound values for one page. The WHERE clause holds what an index
/// answers (it picks the range walked); the filters no index answers make the `hit` column,
/// so the LIMIT bounds the rows walked, not the rows found.
pub(super) fn statement(q: &HistoryQuery) -> (String, Vec<Value>, usize) {
    let f = &q.filter;
    // Repeats the condition of the history indexes: only queries that say it may use them.
    let mut terms: Vec<String> = vec!["typeof(created_at) = 'integer'".into()];
    let mut checks: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut bind = |term: &str, value: Value, to: &mut Vec<String>| {
        values.push(value);
        to.push(term.replace('?', &format!("?{}", values.len())));
    };
    if let Some(state) = f.state {
        // A state is one of our own names: a literal, so the partial index's condition can be
        // repeated next to it.
        let term = format!("state = '{}'", state.as_str());
        match state {
            State::Failed | State::Dead | State::Expired | State::Cancelled => {
                terms.push(term);
                terms.push(ENDED.into());
            }
            // Most rows: a walk of another index finds them at once.
            State::Delivered => terms.push(term),
            // In no index (their entry would move on every claim and delivery): checked on the
            // rows walked, so a page where they are few stops at the walk's bound.
            State::Queued | State::Sending => checks.push(term),
        }
    }
    if let Some(v) = &f.channel {
        bind("channel = ?", Value::Text(v.clone()), &mut terms);
    }
    if let Some(v) = &f.recipient {
        bind("recipient = ?", Value::Text(v.clone()), &mut terms);
    }
    if let Some(v) = &f.fallback_of {
        bind("parent_id = ?", Value::Text(v.clone()), &mut terms);
    }
    if let Some(ms) = f.created_after_ms {
        bind("created_at >= ?", Value::Integer(ms), &mut terms);
    }
    if let Some(ms) = f.created_before_ms {
        bind("created_at < ?", Value::Integer(ms), &mut terms);
    }
    if let Some(p) = f.priority {
        checks.push(format!("priority = '{}'", p.as_str()));
    }
    if let Some(ms) = f.updated_after_ms {
        bind("updated_at >= ?", Value::Integer(ms), &mut checks);
    }
    if let Some(ms) = f.updated_before_ms {
        bind("updated_at < ?", Value::Integer(ms), &mut checks);
    }
    if let Some(text) = &f.subject_contains {
        bind(
            "coalesce(subject LIKE ? ESCAPE '\\', 0)",
            Value::Text(format!("%{}%", escape_like(text))),
            &mut checks,
        );
    }
    if let Some(c) = &q.after {
        values.push(Value::Integer(c.created_at_ms));
        values.push(Value::Text(c.id.clone()));
        let (a, b) = (values.len() - 1, values.len());
        terms.push(format!("(created_at, id) < (?{a}, ?{b})"));
    }
    let hit = if checks.is_empty() {
        "1".to_owned()
    } else {
        checks.join(" AND ")
    };
    let bound = q.walk_bound_if(!checks.is_empty());
    values.push(Value::Integer(i64::try_from(bound).unwrap_or(i64::MAX)));
    let sql = format!(
        "{COLUMNS}, {hit} FROM notifications WHERE {} \
         ORDER BY created_at DESC, id DESC LIMIT ?{}",
        terms.join(" AND "),
        values.len()
    );
    (sql, values, bound)
}

/// `text` with LIKE's wildcards taken literally.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// One page of the history.
pub(super) fn page(conn: &Connection, q: &HistoryQuery) -> Result<HistoryPage> {
    let (sql, values, bound) = statement(q);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(values))?;
    let mut matches = Vec::new();
    let (mut walked, mut last) = (0, None);
    // Stop at one match more than the page: it only says that there is more.
    while matches.len() <= q.limit {
        let Some(r) = rows.next()? else { break };
        walked += 1;
        let item = HistoryItem {
            id: r.get(0)?,
            channel: r.get(1)?,
            to: r.get(2)?,
            state: r
                .get::<_, String>(3)?
                .parse()
                .map_err(StoreError::Internal)?,
            priority: r
                .get::<_, String>(4)?
                .parse()
                .map_err(StoreError::Internal)?,
            attempts: r.get(5)?,
            subject: r.get(6)?,
            created_at_ms: r.get(7)?,
            updated_at_ms: r.get(8)?,
            parent_id: r.get(9)?,
            last_code: r.get(10)?,
        };
        last = Some(HistoryCursor::after(&item));
        if r.get::<_, bool>(11)? {
            matches.push(item);
        }
    }
    let stopped_at = (walked == bound).then_some(last).flatten();
    Ok(HistoryPage::from_walk(matches, stopped_at, q.limit))
}

/// What a notification says (subject, bodies, data), for the console's detail page.
pub(super) fn content(conn: &Connection, id: &str) -> Result<Option<Content>> {
    use rusqlite::OptionalExtension;
    let row = conn
        .prepare_cached("SELECT subject, body, html, data FROM notifications WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    row.map(|(subject, body, html, data)| {
        let data = data
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| StoreError::Internal(format!("bad data JSON: {e}")))?;
        Ok(Content {
            subject,
            body,
            html,
            data,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{note, plan};
    use super::super::{SqliteOptions, SqliteOutbox};
    use super::*;

    fn query(filter: HistoryFilter) -> HistoryQuery {
        HistoryQuery {
            filter,
            after: Some(HistoryCursor {
                created_at_ms: 1,
                id: "x".into(),
            }),
            limit: 50,
            max_walk: MAX_WALK,
        }
    }

    /// The plan of the page `filter` asks for, after a cursor.
    fn plan_of(filter: HistoryFilter) -> String {
        plan(&statement(&query(filter)).0)
    }

    /// Walks `index` in order: no sort of the matching rows, however many there are.
    fn assert_walks(filter: HistoryFilter, index: &str) {
        let plan = plan_of(filter);
        assert!(plan.contains(&format!("USING INDEX {index} (")), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn an_unfiltered_page_walks_the_creation_index() {
        assert_walks(HistoryFilter::default(), "notifications_history");
    }

    #[test]
    fn a_recipient_page_walks_the_recipient_index() {
        assert_walks(
            HistoryFilter {
                recipient: Some("a@example.com".into()),
                state: Some(State::Delivered),
                channel: Some("mail".into()),
                ..Default::default()
            },
            "notifications_history_recipient",
        );
    }

    #[test]
    fn a_channel_page_walks_the_channel_index() {
        assert_walks(
            HistoryFilter {
                channel: Some("mail".into()),
                priority: Some(Priority::High),
                subject_contains: Some("order".into()),
                ..Default::default()
            },
            "notifications_history_channel",
        );
    }

    #[test]
    fn a_page_of_an_end_other_than_delivered_walks_the_ended_index() {
        for state in [State::Dead, State::Failed, State::Cancelled, State::Expired] {
            assert_walks(
                HistoryFilter {
                    state: Some(state),
                    ..Default::default()
                },
                "notifications_history_ended",
            );
        }
    }

    #[test]
    fn a_page_of_live_rows_walks_the_creation_index_and_checks_the_state() {
        for state in [State::Queued, State::Sending] {
            let filter = HistoryFilter {
                state: Some(state),
                ..Default::default()
            };
            let (sql, _, bound) = statement(&query(filter.clone()));
            assert_eq!(bound, MAX_WALK);
            assert!(
                sql.contains(&format!(", state = '{}' FROM", state.as_str())),
                "{sql}"
            );
            assert_walks(filter, "notifications_history");
        }
    }

    #[test]
    fn a_page_of_fallbacks_walks_the_fallback_index() {
        assert_walks(
            HistoryFilter {
                fallback_of: Some("parent".into()),
                ..Default::default()
            },
            "notifications_history_fallback",
        );
    }

    #[test]
    fn a_creation_range_bounds_the_walk() {
        let plan = plan_of(HistoryFilter {
            created_after_ms: Some(1),
            created_before_ms: Some(2),
            ..Default::default()
        });
        assert!(
            plan.contains("USING INDEX notifications_history (created_at>? AND created_at<?)"),
            "{plan}"
        );
    }

    fn open(dir: &tempfile::TempDir) -> SqliteOutbox {
        SqliteOutbox::open(&SqliteOptions::new(dir.path().join("q.db"))).unwrap()
    }

    /// Enqueues notes created 1 ms apart, oldest first; returns their ids.
    async fn fill(q: &SqliteOutbox, notes: Vec<NewNotification>) -> Vec<String> {
        let base = now_ms();
        let notes = notes
            .into_iter()
            .enumerate()
            .map(|(i, n)| NewNotification {
                created_at_ms: base + i as i64,
                ..n
            })
            .collect::<Vec<_>>();
        let ids = notes.iter().map(|n| n.id.to_string()).collect();
        q.enqueue(notes).await.unwrap();
        ids
    }

    fn page_ids(page: &HistoryPage) -> Vec<String> {
        page.items.iter().map(|i| i.id.clone()).collect()
    }

    #[tokio::test]
    async fn pages_run_newest_first_and_inserts_do_not_shift_the_next_page() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir);
        let ids = fill(&q, (0..5).map(|_| note("c")).collect()).await;
        let first = q
            .history(&HistoryQuery {
                filter: HistoryFilter::default(),
                after: None,
                limit: 2,
                max_walk: MAX_WALK,
            })
            .await
            .unwrap();
        assert_eq!(page_ids(&first), vec![ids[4].clone(), ids[3].clone()]);
        // Accepted later than every row already paged (a fill of its own might share their
        // milliseconds).
        let later = (0..3)
            .map(|i| NewNotification {
                created_at_ms: now_ms() + 60_000 + i,
                ..note("c")
            })
            .collect();
        q.enqueue(later).await.unwrap();
        let second = q
            .history(&HistoryQuery {
                filter: HistoryFilter::default(),
                after: first.next.clone(),
                limit: 2,
                max_walk: MAX_WALK,
            })
            .await
            .unwrap();
        assert_eq!(page_ids(&second), vec![ids[2].clone(), ids[1].clone()]);
        let last = q
            .history(&HistoryQuery {
                filter: HistoryFilter::default(),
                after: second.next.clone(),
                limit: 2,
                max_walk: MAX_WALK,
            })
            .await
            .unwrap();
        assert_eq!(page_ids(&last), vec![ids[0].clone()]);
        assert_eq!(last.next, None);
    }

    #[tokio::test]
    async fn rows_created_in_the_same_millisecond_are_paged_by_id_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir);
        let at = now_ms();
        let mut notes: Vec<_> = (0..5)
            .map(|_| NewNotification {
                created_at_ms: at,
                ..note("c")
            })
            .collect();
        notes.sort_by(|a, b| b.id.cmp(&a.id));
        let want: Vec<String> = notes.iter().map(|n| n.id.to_string()).collect();
        q.enqueue(notes).await.unwrap();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = q
                .history(&HistoryQuery {
                    filter: HistoryFilter::default(),
                    after,
                    limit: 2,
                    max_walk: MAX_WALK,
                })
                .await
                .unwrap();
            got.extend(page_ids(&page));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn each_filter_keeps_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir);
        let ids = fill(
            &q,
            vec![
                NewNotification {
                    to: "bob@example.com".into(),
                    ..note("mail")
                },
                NewNotification {
                    priority: Priority::High,
                    subject: Some("Order 100% shipped".into()),
                    ..note("sms")
                },
                NewNotification {
                    subject: Some("Order 1000 shipped".into()),
                    ..note("mail")
                },
            ],
        )
        .await;
        let (bob, high, plain) = (&ids[0], &ids[1], &ids[2]);
        let c = q
            .claim(&"mail".into(), 1, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(&c[0].message.id, bob);
        q.cancel(&plain.as_str().into()).await.unwrap();
        let search = |filter: HistoryFilter| {
            let q = &q;
            async move {
                let page = q
                    .history(&HistoryQuery {
                        filter,
                        after: None,
                        limit: 10,
                        max_walk: MAX_WALK,
                    })
                    .await
                    .unwrap();
                page_ids(&page)
            }
        };
        let f = HistoryFilter::default;
        assert_eq!(
            search(HistoryFilter {
                recipient: Some("bob@example.com".into()),
                ..f()
            })
            .await,
            vec![bob.clone()]
        );
        assert_eq!(
            search(HistoryFilter {
                channel: Some("mail".into()),
                ..f()
            })
            .await,
            vec![plain.clone(), bob.clone()]
        );
        assert_eq!(
            search(HistoryFilter {
                state: Some(State::Sending),
                ..f()
            })
            .await,
            vec![bob.clone()]
        );
        assert_eq!(
            search(HistoryFilter {
                state: Some(State::Cancelled),
                ..f()
            })
            .await,
            vec![plain.clone()]
        );
        assert_eq!(
            search(HistoryFilter {
                priority: Some(Priority::High),
                ..f()
            })
            .await,
            vec![high.clone()]
        );
        assert_eq!(
            search(HistoryFilter {
                subject_contains: Some("100%".into()),
                ..f()
            })
            .await,
            vec![high.clone()],
            "% is literal text, not a wildcard"
        );
        assert_eq!(
            search(HistoryFilter {
                subject_contains: Some("order".into()),
                ..f()
            })
            .await,
            vec![plain.clone(), high.clone()],
            "case-insensitive"
        );
        let high_at = q
            .get(&high.as_str().into())
            .await
            .unwrap()
            .unwrap()
            .created_at_ms;
        assert_eq!(
            search(HistoryFilter {
                created_after_ms: Some(high_at),
                created_before_ms: Some(high_at + 1),
                ..f()
            })
            .await,
            vec![high.clone()]
        );
        assert_eq!(
            search(HistoryFilter {
                fallback_of: Some(bob.clone()),
                ..f()
            })
            .await,
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn a_rare_text_is_found_a_bounded_walk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir);
        let mut notes: Vec<_> = (0..30).map(|_| note("c")).collect();
        notes[0].subject = Some("Refund processed".into());
        let refund = fill(&q, notes).await.remove(0);
        let filter = HistoryFilter {
            subject_contains: Some("refund".into()),
            ..Default::default()
        };
        let (mut found, mut pages, mut after) = (Vec::new(), 0, None);
        loop {
            let page = q
                .history(&HistoryQuery {
                    filter: filter.clone(),
                    after,
                    limit: 5,
                    max_walk: 10,
                })
                .await
                .unwrap();
            pages += 1;
            found.extend(page_ids(&page));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            found,
            vec![refund],
            "the oldest of 30 rows is the one match"
        );
        assert_eq!(
            pages, 4,
            "three walks of 10 rows, then an empty one says it is the end"
        );
    }

    #[tokio::test]
    async fn a_live_state_is_found_a_bounded_walk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir);
        fill(&q, (0..30).map(|_| note("c")).collect()).await;
        let sending = q
            .claim(&"c".into(), 1, std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .remove(0)
            .message
            .id;
        let filter = HistoryFilter {
            state: Some(State::Sending),
            ..Default::default()
        };
        let (mut found, mut pages, mut after) = (Vec::new(), 0, None);
        loop {
            let page = q
                .history(&HistoryQuery {
                    filter: filter.clone(),
                    after,
                    limit: 5,
                    max_walk: 10,
                })
                .await
                .unwrap();
            pages += 1;
            found.extend(page_ids(&page));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(found, vec![sending], "the one row of 30 being sent");
        assert_eq!(
            pages, 4,
            "three walks of 10 rows, then an empty one says it is the end"
        );
    }

    #[tokio::test]
    async fn content_is_what_was_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir);
        let n = NewNotification {
            data: Some(serde_json::json!({"order": 7})),
            ..note("c")
        };
        let id = fill(&q, vec![n]).await.remove(0);
        let content = q.content(&id.as_str().into()).await.unwrap().unwrap();
        assert_eq!(content.subject.as_deref(), Some("Subject"));
        assert_eq!(content.body.as_deref(), Some("Body"));
        assert_eq!(content.data, Some(serde_json::json!({"order": 7})));
        assert_eq!(q.content(&"nope".into()).await.unwrap(), None);
    }
}
