//! The contract for rows the daemon cannot decode, one test per kind of bad column: the row is
//! quarantined on its own (`dead`, `unreadable_row`, the decode error as reason), the claim
//! goes on with the rest of the channel, and the views still show the row.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::tests::note;
use super::*;

const LEASE: Duration = Duration::from_secs(60);

fn queue(dir: &tempfile::TempDir) -> SqliteOutbox {
    SqliteOutbox::open(&SqliteOptions::new(dir.path().join("q.db"))).unwrap()
}

/// Another program's connection to the queue file.
fn foreign(dir: &tempfile::TempDir) -> Connection {
    let conn = Connection::open(dir.path().join("q.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// A queue whose table lost its STRICT typing, as a tool that rebuilds tables without knowing
/// STRICT leaves it: then a column can hold any storage class.
fn loose_queue(dir: &tempfile::TempDir) -> SqliteOutbox {
    drop(queue(dir));
    loosen(&dir.path().join("q.db"));
    queue(dir)
}

fn loosen(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
    let changed = conn
        .execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ') STRICT', ')')
             WHERE name = 'notifications' AND sql LIKE '%) STRICT'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1, "the table was STRICT");
    let version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA schema_version = {}; PRAGMA writable_schema = OFF",
        version + 1
    ))
    .unwrap();
}

/// Inserts a row for channel `c` with plain SQL, due a minute ago (before anything the daemon
/// queues now), and returns its rowid.
fn insert(dir: &tempfile::TempDir, columns: &str, values: &str) -> i64 {
    let conn = foreign(dir);
    let due = now_ms() - 60_000;
    conn.execute(
        &format!(
            "INSERT INTO notifications (channel, run_at, {columns}) VALUES ('c', {due}, {values})"
        ),
        [],
    )
    .unwrap();
    conn.last_insert_rowid()
}

/// State, code and reason of a row, by rowid.
fn fate(dir: &tempfile::TempDir, rowid: i64) -> (String, Option<String>, Option<String>) {
    foreign(dir)
        .query_row(
            "SELECT state, last_code, last_error FROM notifications WHERE rowid = ?1",
            [rowid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// Queues a good notification behind the bad row, claims the channel, and checks that the
/// claim brought the good one and quarantined the bad one with a reason that starts with
/// `reason`.
async fn assert_quarantined(q: &SqliteOutbox, dir: &tempfile::TempDir, rowid: i64, reason: &str) {
    let good = note("c");
    let good_id = good.id.clone();
    q.enqueue(vec![good]).await.unwrap();

    let claimed = q
        .claim(&"c".into(), 10, LEASE)
        .await
        .expect("the claim goes on");

    let ids: Vec<&str> = claimed.iter().map(|c| c.message.id.as_str()).collect();
    assert_eq!(ids, vec![good_id.as_str()]);
    let (state, code, error) = fate(dir, rowid);
    assert_eq!(
        (state.as_str(), code.as_deref()),
        ("dead", Some("unreadable_row"))
    );
    let error = error.unwrap_or_default();
    assert!(error.starts_with(reason), "reason {error:?}");
}

#[tokio::test]
async fn text_that_is_not_utf8_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(&dir, "recipient, body", "'a', CAST(X'FF' AS TEXT)");
    assert_quarantined(&q, &dir, rowid, "body: not UTF-8 text").await;
}

#[tokio::test]
async fn a_row_whose_id_is_not_utf8_is_quarantined_by_its_rowid() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(
        &dir,
        "id, recipient, body",
        "CAST(X'C0FFEE' AS TEXT), 'a', 'b'",
    );
    assert_quarantined(&q, &dir, rowid, "id: not UTF-8 text").await;
}

#[tokio::test]
async fn a_blob_where_text_belongs_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = loose_queue(&dir);
    let rowid = insert(&dir, "recipient, subject", "'a', X'00FF'");
    assert_quarantined(&q, &dir, rowid, "subject: a BLOB where TEXT belongs").await;
}

#[tokio::test]
async fn a_negative_attempt_count_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(&dir, "recipient, body, attempts", "'a', 'b', -5");
    assert_quarantined(&q, &dir, rowid, "attempts: -5 is out of range").await;
}

#[tokio::test]
async fn an_attempt_count_that_would_overflow_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(
        &dir,
        "recipient, body, attempts",
        &format!("'a', 'b', {}", i64::MAX),
    );
    assert_quarantined(
        &q,
        &dir,
        rowid,
        "attempts: 9223372036854775807 is out of range",
    )
    .await;
}

#[tokio::test]
async fn a_lease_token_the_claim_cannot_raise_is_quarantined() {
    // `lease + 1` past i64::MAX is a REAL, which the STRICT column refuses: the claim statement
    // itself failed, for every row of the channel.
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(
        &dir,
        "recipient, body, lease",
        &format!("'a', 'b', {}", i64::MAX),
    );
    assert_quarantined(
        &q,
        &dir,
        rowid,
        "lease: 9223372036854775807 is out of range",
    )
    .await;
}

#[tokio::test]
async fn a_real_where_an_integer_belongs_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = loose_queue(&dir);
    let rowid = insert(&dir, "recipient, body, created_at", "'a', 'b', 1.5");
    assert_quarantined(
        &q,
        &dir,
        rowid,
        "created_at: a REAL where an INTEGER belongs",
    )
    .await;
}

#[tokio::test]
async fn text_where_an_integer_belongs_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = loose_queue(&dir);
    let rowid = insert(&dir, "recipient, body, expires_at", "'a', 'b', 'soon'");
    assert_quarantined(&q, &dir, rowid, "expires_at: TEXT where an INTEGER belongs").await;
}

#[tokio::test]
async fn data_json_too_deep_to_read_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    // Valid JSON for SQLite (it nests up to 1000 deep), too deep for the daemon's parser.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let rowid = insert(
        &dir,
        "recipient, body, data",
        &format!("'a', 'b', '{deep}'"),
    );
    assert_quarantined(&q, &dir, rowid, "data: not the JSON this daemon reads").await;
}

#[tokio::test]
async fn a_failover_list_of_the_wrong_shape_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(&dir, "recipient, body, tried", r#"'a', 'b', '{"x": 1}'"#);
    assert_quarantined(&q, &dir, rowid, "tried: not the JSON this daemon reads").await;
}

#[tokio::test]
async fn a_fallback_of_the_wrong_shape_is_quarantined_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(&dir, "recipient, body, fallback", r#"'a', 'b', '{"a": 1}'"#);
    assert_quarantined(&q, &dir, rowid, "fallback: not the JSON this daemon reads").await;
}

#[tokio::test]
async fn an_outcome_is_recorded_when_the_stored_fallback_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let n = NewNotification {
        fallback: vec![
            FallbackTarget {
                channel: "d".into(),
                to: "x".into(),
            }
            .into(),
        ],
        ..note("c")
    };
    let id = n.id.clone();
    q.enqueue(vec![n]).await.unwrap();
    let claimed = q.claim(&"c".into(), 1, LEASE).await.unwrap().remove(0);
    foreign(&dir)
        .execute(
            r#"UPDATE notifications SET fallback = '{"a": 1}' WHERE id = ?1"#,
            [&id],
        )
        .unwrap();

    q.complete(vec![Completion {
        events: Vec::new(),
        id: id.clone(),
        attempt: claimed.attempt,
        lease: claimed.lease,
        outcome: Outcome::Finish {
            state: State::Failed,
            code: "invalid_recipient".into(),
            error: "no such user".into(),
            fallback: true,
        },
        record: None,
    }])
    .await
    .expect("the outcome is recorded");

    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Dead);
    assert_eq!(view.last_code.as_deref(), Some("unreadable_row"));
    let error = view.last_error.unwrap_or_default();
    assert!(
        error.starts_with("fallback: not the JSON this daemon reads")
            && error.ends_with(
                "its fallback was not queued after it ended failed (invalid_recipient: no such user)"
            ),
        "{error}"
    );
    assert!(q.claim(&"c".into(), 10, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_quarantined_row_is_shown_by_get_and_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let rowid = insert(
        &dir,
        "id, recipient, body, attempts, fallback",
        r#"'bad-1', CAST(X'61FF' AS TEXT), 'b', -5, '{"a": 1}'"#,
    );
    q.claim(&"c".into(), 10, LEASE).await.unwrap();
    assert_eq!(fate(&dir, rowid).1.as_deref(), Some("unreadable_row"));

    let view = q.get(&"bad-1".into()).await.unwrap().expect("shown");
    assert_eq!(view.state, State::Dead);
    assert_eq!(view.to, "a\u{FFFD}");
    assert_eq!(view.attempts, 0, "a negative count shows as 0");
    assert!(view.fallback.is_empty());
    let dead = q.dead_letters(Some(&"c".into()), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "bad-1");
    assert_eq!(dead[0].last_code.as_deref(), Some("unreadable_row"));
    assert!(q.depth().await.is_ok());
}

#[tokio::test]
async fn a_channel_of_unreadable_rows_is_drained_in_one_claim() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    for _ in 0..5 {
        insert(&dir, "recipient, body", "'a', CAST(X'FF' AS TEXT)");
    }
    let good = note("c");
    let good_id = good.id.clone();
    q.enqueue(vec![good]).await.unwrap();

    let claimed = q.claim(&"c".into(), 2, LEASE).await.unwrap();

    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message.id, good_id);
}

#[tokio::test]
async fn a_row_of_a_channel_name_that_is_not_utf8_does_not_stop_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let conn = foreign(&dir);
    conn.execute(
        "INSERT INTO notifications (channel, recipient, body) VALUES (CAST(X'FF' AS TEXT), 'a', 'b')",
        [],
    )
    .unwrap();
    let rowid = conn.last_insert_rowid();
    let keep = Retention {
        finished_ms: 86_400_000,
        unmatched_receipts_ms: 86_400_000,
    };

    let report = q.sweep(&["c".into()], &keep).await.expect("the sweep runs");

    assert_eq!(report.orphaned, 1);
    assert_eq!(fate(&dir, rowid).1.as_deref(), Some("unknown_channel"));
}
