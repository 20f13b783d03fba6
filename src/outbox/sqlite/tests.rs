use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::*;

fn open(dir: &tempfile::TempDir) -> SqliteOutbox {
    SqliteOutbox::open(&SqliteOptions::new(dir.path().join("q.db"))).unwrap()
}

/// A plain notification for `channel` (also used by the writer's own tests).
pub(super) fn note(channel: &str) -> NewNotification {
    NewNotification {
        id: uuid::Uuid::now_v7().to_string().into(),
        channel: channel.into(),
        to: "ops@example.com".into(),
        subject: Some("Subject".into()),
        body: Some("Body".into()),
        html: None,
        data: None,
        priority: Priority::Normal,
        run_at_ms: now_ms(),
        expires_at_ms: None,
        created_at_ms: now_ms(),
        idempotency_key: None,
        content_hash: "h1".into(),
        fallback: Vec::new(),
        source: None,
        deliver_between: None,
        dedup: None,
        digest: None,
        escalation: Default::default(),
    }
}

async fn put(q: &SqliteOutbox, n: NewNotification) -> NotificationId {
    match q.enqueue(vec![n]).await.unwrap().remove(0) {
        Enqueued::Created { id } => id,
        other => panic!("expected created, got {other:?}"),
    }
}

fn ids(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.message.id.clone()).collect()
}

const LEASE: Duration = Duration::from_secs(60);
const KEEP: Retention = Retention {
    finished_ms: 86_400_000,
    unmatched_receipts_ms: 86_400_000,
};

async fn deliver(q: &SqliteOutbox, id: &str, channel: &str, provider_id: &str) {
    let c = q.claim(&channel.into(), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.id, id);
    q.complete(vec![Completion {
        events: Vec::new(),
        lease: c.lease,
        ..done(
            id,
            c.attempt,
            Outcome::Delivered {
                provider_id: Some(provider_id.into()),
            },
        )
    }])
    .await
    .unwrap();
}

fn receipt(provider_id: &str, status: ReceiptStatus, word: &str) -> InboundReceipt {
    InboundReceipt {
        channel: "sms".into(),
        provider_id: provider_id.into(),
        status,
        provider_status: word.into(),
        error_code: (status == ReceiptStatus::Failed).then(|| "30003".to_owned()),
    }
}

/// The completion of a row claimed `attempt` times in all (so its lease token is `attempt` too).
fn done(id: &str, attempt: u32, outcome: Outcome) -> Completion {
    Completion {
        events: Vec::new(),
        id: id.into(),
        attempt,
        lease: LeaseToken(i64::from(attempt)),
        outcome,
        record: None,
    }
}

#[tokio::test]
async fn claim_takes_high_priority_first_then_earliest_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let now = now_ms();
    let low = put(
        &q,
        NewNotification {
            priority: Priority::Low,
            run_at_ms: now - 3000,
            ..note("c")
        },
    )
    .await;
    let normal_late = put(
        &q,
        NewNotification {
            run_at_ms: now - 1000,
            ..note("c")
        },
    )
    .await;
    let normal_early = put(
        &q,
        NewNotification {
            run_at_ms: now - 2000,
            ..note("c")
        },
    )
    .await;
    let high = put(
        &q,
        NewNotification {
            priority: Priority::High,
            run_at_ms: now,
            ..note("c")
        },
    )
    .await;

    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(ids(&q.claim(&"c".into(), 1, LEASE).await.unwrap()));
    }
    assert_eq!(got, vec![high, normal_early, normal_late, low]);
}

#[tokio::test]
async fn one_claim_of_several_rows_returns_them_highest_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let mut by_priority = Vec::new();
    for priority in [Priority::Low, Priority::Normal, Priority::High] {
        by_priority.push(
            put(
                &q,
                NewNotification {
                    priority,
                    ..note("c")
                },
            )
            .await,
        );
    }
    by_priority.reverse();
    assert_eq!(
        ids(&q.claim(&"c".into(), 3, LEASE).await.unwrap()),
        by_priority
    );
}

#[tokio::test]
async fn claim_only_takes_its_own_channel_and_respects_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    for _ in 0..5 {
        put(&q, note("a")).await;
    }
    let b = put(&q, note("b")).await;
    assert_eq!(q.claim(&"a".into(), 3, LEASE).await.unwrap().len(), 3);
    assert_eq!(
        ids(&q.claim(&"b".into(), 10, LEASE).await.unwrap()),
        vec![b]
    );
    assert_eq!(q.claim(&"a".into(), 10, LEASE).await.unwrap().len(), 2);
    assert!(q.claim(&"a".into(), 10, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn claim_increments_the_attempt_and_carries_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(
        &q,
        NewNotification {
            data: Some(serde_json::json!({"k": "v"})),
            ..note("c")
        },
    )
    .await;
    let c = q.claim(&"c".into(), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.attempt, 1);
    assert_eq!(c.message.id, id);
    assert_eq!(c.message.to, "ops@example.com");
    assert_eq!(c.message.data, Some(serde_json::json!({"k": "v"})));
    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Sending);
    assert_eq!(view.attempts, 1);
}

#[tokio::test]
async fn a_leased_row_is_not_claimed_again_until_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("c")).await;
    assert_eq!(
        q.claim(&"c".into(), 1, Duration::from_millis(150))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(q.claim(&"c".into(), 1, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = q.claim(&"c".into(), 1, LEASE).await.unwrap();
    assert_eq!(ids(&again), vec![id]);
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn a_completion_from_a_lost_lease_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("c")).await;
    q.claim(&"c".into(), 1, Duration::ZERO).await.unwrap();
    let second = q.claim(&"c".into(), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);

    // The first attempt's worker finishes late: fenced out.
    q.complete(vec![done(
        &id,
        1,
        Outcome::Finish {
            state: State::Failed,
            code: "x".into(),
            error: "late".into(),
            fallback: false,
        },
    )])
    .await
    .unwrap();
    assert_eq!(q.get(&id).await.unwrap().unwrap().state, State::Sending);

    q.complete(vec![done(
        &id,
        2,
        Outcome::Delivered {
            provider_id: Some("p-1".into()),
        },
    )])
    .await
    .unwrap();
    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert_eq!(view.provider_id.as_deref(), Some("p-1"));
}

#[tokio::test]
async fn a_lease_held_by_another_process_fences_this_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir);
    let b = open(&dir);
    let id = put(&a, note("c")).await;
    a.claim(&"c".into(), 1, Duration::ZERO).await.unwrap();
    b.claim(&"c".into(), 1, LEASE).await.unwrap();
    // Same attempt number cannot happen across owners, but the owner check holds anyway.
    a.complete(vec![done(&id, 2, Outcome::Delivered { provider_id: None })])
        .await
        .unwrap();
    assert_eq!(a.get(&id).await.unwrap().unwrap().state, State::Sending);
}

#[tokio::test]
async fn a_retry_is_not_due_before_its_run_at_and_a_refund_keeps_the_attempt_count() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("c")).await;
    q.claim(&"c".into(), 1, LEASE).await.unwrap();
    q.complete(vec![done(
        &id,
        1,
        Outcome::Retry {
            run_at_ms: now_ms() + 60_000,
            refund_attempt: true,
            code: "rate_limited".into(),
            error: "slow down".into(),
        },
    )])
    .await
    .unwrap();
    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Queued);
    assert_eq!(view.attempts, 0);
    assert_eq!(view.last_code.as_deref(), Some("rate_limited"));
    assert!(q.claim(&"c".into(), 1, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_scheduled_notification_is_claimed_only_once_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(
        &q,
        NewNotification {
            run_at_ms: now_ms() + 300,
            ..note("c")
        },
    )
    .await;
    assert!(q.claim(&"c".into(), 1, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        ids(&q.claim(&"c".into(), 1, LEASE).await.unwrap()),
        vec![id]
    );
}

#[tokio::test]
async fn the_sweep_expires_overdue_rows_and_dead_letters_unknown_channels() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let stale = put(
        &q,
        NewNotification {
            expires_at_ms: Some(now_ms() - 1),
            ..note("c")
        },
    )
    .await;
    let fresh = put(
        &q,
        NewNotification {
            expires_at_ms: Some(now_ms() + 60_000),
            ..note("c")
        },
    )
    .await;
    let orphan = put(&q, note("gone")).await;
    // Leased by a dispatcher that crashed, then its channel was removed from the config.
    let abandoned = put(&q, note("gone")).await;
    let leased = q
        .claim(&"gone".into(), 2, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;

    let report = q.sweep(&["c".into()], &KEEP).await.unwrap();

    assert_eq!(
        report,
        SweepReport {
            expired: vec![ExpiredRow {
                id: stale.clone(),
                channel: "c".into(),
            }],
            orphaned: 2,
            purged: 0,
            receipts_purged: 0,
        }
    );
    assert_eq!(q.get(&stale).await.unwrap().unwrap().state, State::Expired);
    assert_eq!(q.get(&fresh).await.unwrap().unwrap().state, State::Queued);
    for id in [orphan, abandoned] {
        let row = q.get(&id).await.unwrap().unwrap();
        assert_eq!(row.state, State::Dead);
        assert_eq!(row.last_code.as_deref(), Some("unknown_channel"));
    }
    let dead = q.dead_letters(Some(&"gone".into()), 10).await.unwrap();
    assert_eq!(dead.len(), 2);
}

#[tokio::test]
async fn same_idempotency_key_and_content_returns_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let first = put(
        &q,
        NewNotification {
            idempotency_key: Some("k1".into()),
            ..note("c")
        },
    )
    .await;
    let again = q
        .enqueue(vec![NewNotification {
            idempotency_key: Some("k1".into()),
            ..note("c")
        }])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![Enqueued::Duplicate {
            id: first,
            state: State::Queued
        }]
    );
}

#[tokio::test]
async fn same_idempotency_key_with_different_content_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let first = put(
        &q,
        NewNotification {
            idempotency_key: Some("k1".into()),
            ..note("c")
        },
    )
    .await;
    let again = q
        .enqueue(vec![NewNotification {
            idempotency_key: Some("k1".into()),
            content_hash: "other".into(),
            ..note("c")
        }])
        .await
        .unwrap();
    assert_eq!(again, vec![Enqueued::Conflict { id: first }]);
}

#[tokio::test]
async fn idempotency_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let q = open(&dir);
        put(
            &q,
            NewNotification {
                idempotency_key: Some("k1".into()),
                ..note("c")
            },
        )
        .await
    };
    let q = open(&dir);
    let again = q
        .enqueue(vec![NewNotification {
            idempotency_key: Some("k1".into()),
            ..note("c")
        }])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![Enqueued::Duplicate {
            id: first,
            state: State::Queued
        }]
    );
}

#[tokio::test]
async fn cancel_works_only_while_queued() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let queued = put(&q, note("a")).await;
    let sending = put(&q, note("b")).await;
    q.claim(&"b".into(), 1, LEASE).await.unwrap();

    assert_eq!(
        q.cancel(&queued).await.unwrap(),
        Transition::Done(State::Cancelled)
    );
    assert_eq!(
        q.cancel(&sending).await.unwrap(),
        Transition::Refused(State::Sending)
    );
    assert_eq!(
        q.cancel(&"nope".into()).await.unwrap(),
        Transition::NotFound
    );
    assert!(q.claim(&"a".into(), 1, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_replay_requeues_it_with_a_fresh_budget() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("c")).await;
    q.claim(&"c".into(), 1, LEASE).await.unwrap();
    q.complete(vec![done(
        &id,
        1,
        Outcome::Finish {
            state: State::Dead,
            code: "http_503".into(),
            error: "down".into(),
            fallback: false,
        },
    )])
    .await
    .unwrap();

    let dead = q.dead_letters(Some(&"c".into()), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].last_code.as_deref(), Some("http_503"));
    assert!(
        q.dead_letters(Some(&"other".into()), 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        q.replay(&id).await.unwrap(),
        Transition::Done(State::Queued)
    );
    assert_eq!(
        q.replay(&id).await.unwrap(),
        Transition::Refused(State::Queued)
    );
    let again = q.claim(&"c".into(), 1, LEASE).await.unwrap();
    assert_eq!(again[0].attempt, 1);
}

#[tokio::test]
async fn a_failure_with_fallback_queues_the_next_route_with_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(
        &q,
        NewNotification {
            fallback: vec![
                FallbackTarget {
                    channel: "sms".into(),
                    to: "+15551234567".into(),
                }
                .into(),
                FallbackTarget {
                    channel: "mail".into(),
                    to: "b@example.com".into(),
                }
                .into(),
            ],
            ..note("push")
        },
    )
    .await;
    q.claim(&"push".into(), 1, LEASE).await.unwrap();
    q.complete(vec![done(
        &id,
        1,
        Outcome::Finish {
            state: State::Failed,
            code: "UNREGISTERED".into(),
            error: "dead token".into(),
            fallback: true,
        },
    )])
    .await
    .unwrap();

    let child = q.claim(&"sms".into(), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(child.message.to, "+15551234567");
    assert_eq!(child.message.body.as_deref(), Some("Body"));
    let view = q
        .get(&child.message.id.as_str().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.parent_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        view.fallback,
        vec![FallbackTarget {
            channel: "mail".into(),
            to: "b@example.com".into()
        }]
    );
}

#[tokio::test]
async fn attempts_are_recorded_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("c")).await;
    q.claim(&"c".into(), 1, LEASE).await.unwrap();
    q.complete(vec![Completion {
        events: Vec::new(),
        id: id.clone(),
        attempt: 1,
        lease: LeaseToken(1),
        outcome: Outcome::Retry {
            run_at_ms: 0,
            refund_attempt: false,
            code: "http_503".into(),
            error: "down".into(),
        },
        record: Some(AttemptRecord {
            started_at_ms: 10,
            latency_ms: 12,
            outcome: "transient".into(),
            code: Some("http_503".into()),
            error: Some("down".into()),
            provider_id: None,
            decision: "retry".into(),
            channel: "c".into(),
        }),
    }])
    .await
    .unwrap();
    q.claim(&"c".into(), 1, LEASE).await.unwrap();
    q.complete(vec![Completion {
        events: Vec::new(),
        id: id.clone(),
        attempt: 2,
        lease: LeaseToken(2),
        outcome: Outcome::Delivered {
            provider_id: Some("SM1".into()),
        },
        record: Some(AttemptRecord {
            started_at_ms: 20,
            latency_ms: 7,
            outcome: "delivered".into(),
            code: None,
            error: None,
            provider_id: Some("SM1".into()),
            decision: "delivered".into(),
            channel: "c".into(),
        }),
    }])
    .await
    .unwrap();
    let view = q.get(&id).await.unwrap().unwrap();
    let log: Vec<(u32, &str, &str)> = view
        .attempt_log
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.decision.as_str()))
        .collect();
    assert_eq!(
        log,
        vec![(1, "transient", "retry"), (2, "delivered", "delivered")]
    );
    assert_eq!(view.attempt_log[0].latency_ms, 12);
}

#[tokio::test]
async fn a_plain_sql_insert_with_only_the_required_columns_is_claimable() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let conn = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO notifications (channel, recipient, body) VALUES ('c', '+15550001111', 'hi')",
        [],
    )
    .unwrap();
    let c = q.claim(&"c".into(), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(c.message.to, "+15550001111");
    assert_eq!(c.message.body.as_deref(), Some("hi"));
    assert_eq!(c.message.id.len(), 32);
    let view = q.get(&c.message.id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(view.priority, Priority::Normal);
    assert!((view.created_at_ms - now_ms()).abs() < 5_000);
}

#[tokio::test]
async fn a_parent_whose_fallback_cannot_be_read_ends_dead_and_the_batch_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let other = put(&q, note("c")).await;
    // Valid JSON, so the schema lets plain SQL store it, but not a list of routes; marked as
    // checked, as if it had been spoiled after the daemon wrote it (unchecked rows are
    // quarantined by the claim before they are sent).
    let conn = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO notifications (id, channel, recipient, body, fallback, checked)
         VALUES ('broken', 'c', 'to', 'hi', '{\"sms\": 1}', 1)",
        [],
    )
    .unwrap();
    let claimed = q.claim(&"c".into(), 2, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let failed = |id: &str| {
        done(
            id,
            1,
            Outcome::Finish {
                state: State::Failed,
                code: "invalid_recipient".into(),
                error: "no such user".into(),
                fallback: true,
            },
        )
    };
    q.complete(vec![failed("broken"), failed(&other)])
        .await
        .unwrap();

    let dead = q.dead_letters(Some(&"c".into()), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "broken");
    assert_eq!(dead[0].last_code.as_deref(), Some("unreadable_row"));
    assert_eq!(q.get(&other).await.unwrap().unwrap().state, State::Failed);
}

#[tokio::test]
async fn a_completion_into_a_state_no_attempt_ends_in_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let bad = put(&q, note("c")).await;
    let good = put(&q, note("c")).await;
    assert_eq!(q.claim(&"c".into(), 2, LEASE).await.unwrap().len(), 2);
    let into = |id: &str, state| {
        done(
            id,
            1,
            Outcome::Finish {
                state,
                code: "x".into(),
                error: "x".into(),
                fallback: false,
            },
        )
    };
    q.complete(vec![
        into(&bad, State::Cancelled),
        into(&good, State::Failed),
    ])
    .await
    .unwrap();
    assert_eq!(q.get(&bad).await.unwrap().unwrap().state, State::Sending);
    assert_eq!(q.get(&good).await.unwrap().unwrap().state, State::Failed);
}

#[tokio::test]
async fn a_plain_sql_insert_with_a_bad_priority_is_refused_by_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let _q = open(&dir);
    let conn = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    let err = conn
        .execute(
            "INSERT INTO notifications (channel, recipient, body, priority) VALUES ('c', 'x', 'hi', 'urgent')",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
}

#[tokio::test]
async fn concurrent_enqueues_share_commits_and_all_get_answers() {
    let dir = tempfile::tempdir().unwrap();
    let q = std::sync::Arc::new(open(&dir));
    let before = q.commits();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move { put(&q, note("c")).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 200);
    let commits = q.commits() - before;
    // All 200 are waiting before the first commit's fsync ends: they cannot need 200 commits.
    assert!(
        (1..100).contains(&commits),
        "{commits} commits for 200 enqueues"
    );
    assert_eq!(q.claim(&"c".into(), 1000, LEASE).await.unwrap().len(), 200);
}

#[tokio::test]
async fn an_accepted_notification_is_on_disk_when_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let (commits, syncs) = (q.commits(), q.syncs());

    put(&q, note("c")).await;

    assert_eq!(q.commits() - commits, 1);
    assert_eq!(q.syncs() - syncs, 1);
}

#[tokio::test]
async fn what_a_claim_deferred_is_synced_once_the_writer_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    put(&q, note("c")).await;
    let syncs = q.syncs();

    assert_eq!(q.claim(&"c".into(), 1, LEASE).await.unwrap().len(), 1);

    // Nothing else comes: the writer syncs the WAL itself, within SYNC_WITHIN (50 ms); the
    // bound here only keeps a broken writer from hanging the test.
    let deadline = crate::clock::now() + Duration::from_secs(10);
    while q.syncs() == syncs && crate::clock::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(q.syncs() - syncs, 1);
}

#[tokio::test]
async fn a_full_disk_is_unavailable_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteOutbox::open(&SqliteOptions {
        max_page_count: Some(1),
        ..SqliteOptions::new(path.clone())
    })
    .unwrap();
    // The schema already uses more than one page: any growth fails like a full disk.
    let big = NewNotification {
        body: Some("x".repeat(64 * 1024)),
        ..note("c")
    };
    let err = q.enqueue(vec![big]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    drop(q);
    let q = open(&dir);
    assert!(q.claim(&"c".into(), 10, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn depth_counts_live_and_dead_rows_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    put(&q, note("a")).await;
    put(&q, note("a")).await;
    put(&q, note("b")).await;
    q.claim(&"b".into(), 1, LEASE).await.unwrap();
    let mut depth = q.depth().await.unwrap();
    depth.sort_by(|x, y| {
        (x.channel.as_str(), x.state.as_str()).cmp(&(y.channel.as_str(), y.state.as_str()))
    });
    assert_eq!(
        depth,
        vec![
            Depth {
                channel: "a".into(),
                state: State::Queued,
                count: 2
            },
            Depth {
                channel: "b".into(),
                state: State::Sending,
                count: 1
            },
        ]
    );
}

#[tokio::test]
async fn a_receipt_for_a_known_message_is_attached_and_a_failure_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("sms")).await;
    deliver(&q, &id, "sms", "SM1").await;
    assert_eq!(
        q.record_receipt(receipt("SM1", ReceiptStatus::InProgress, "sent"))
            .await
            .unwrap()
            .notification_id,
        Some(id.clone())
    );
    assert_eq!(q.get(&id).await.unwrap().unwrap().state, State::Delivered);
    q.record_receipt(receipt("SM1", ReceiptStatus::Failed, "undelivered"))
        .await
        .unwrap();
    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Failed);
    assert_eq!(view.last_code.as_deref(), Some("30003"));
    let words: Vec<&str> = view
        .receipts
        .iter()
        .map(|r| r.provider_status.as_str())
        .collect();
    assert_eq!(words, vec!["sent", "undelivered"]);
}

#[tokio::test]
async fn a_receipt_that_arrives_before_the_provider_id_is_matched_when_it_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("sms")).await;
    assert_eq!(
        q.record_receipt(receipt("SM2", ReceiptStatus::Failed, "undelivered"))
            .await
            .unwrap()
            .notification_id,
        None
    );
    deliver(&q, &id, "sms", "SM2").await;
    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.receipts.len(), 1);
    assert_eq!(
        view.state,
        State::Failed,
        "the early failure receipt applies once matched"
    );
}

#[tokio::test]
async fn a_delivered_receipt_keeps_the_notification_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("sms")).await;
    deliver(&q, &id, "sms", "SM3").await;
    q.record_receipt(receipt("SM3", ReceiptStatus::Delivered, "delivered"))
        .await
        .unwrap();
    let view = q.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert_eq!(view.receipts[0].status, "delivered");
}

#[tokio::test]
async fn retention_purges_old_finished_rows_and_unmatched_receipts_but_keeps_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let delivered = put(&q, note("a")).await;
    deliver(&q, &delivered, "a", "P1").await;
    let dead = put(&q, note("b")).await;
    q.claim(&"b".into(), 1, LEASE).await.unwrap();
    q.complete(vec![done(
        &dead,
        1,
        Outcome::Finish {
            state: State::Dead,
            code: "x".into(),
            error: "y".into(),
            fallback: false,
        },
    )])
    .await
    .unwrap();
    let queued = put(&q, note("a")).await;
    q.record_receipt(receipt("NOBODY", ReceiptStatus::Delivered, "delivered"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let report = q
        .sweep(
            &["a".into(), "b".into()],
            &Retention {
                finished_ms: 10,
                unmatched_receipts_ms: 10,
            },
        )
        .await
        .unwrap();

    assert_eq!((report.purged, report.receipts_purged), (1, 1));
    assert!(q.get(&delivered).await.unwrap().is_none());
    assert_eq!(q.get(&dead).await.unwrap().unwrap().state, State::Dead);
    assert_eq!(q.get(&queued).await.unwrap().unwrap().state, State::Queued);
}

fn receipt_on(
    channel: &str,
    provider_id: &str,
    status: ReceiptStatus,
    word: &str,
) -> InboundReceipt {
    InboundReceipt {
        channel: channel.into(),
        ..receipt(provider_id, status, word)
    }
}

#[tokio::test]
async fn a_receipt_never_matches_a_notification_of_another_channel() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    // Two providers that happen to hand out the same message id.
    let on_b = put(&q, note("b")).await;
    deliver(&q, &on_b, "b", "SAME").await;
    let answer = q
        .record_receipt(receipt_on(
            "a",
            "SAME",
            ReceiptStatus::Failed,
            "undelivered",
        ))
        .await
        .unwrap();
    assert_eq!(answer.notification_id, None);
    let view = q.get(&on_b).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert!(view.receipts.is_empty());

    // Nor is an early receipt of channel a attached when b records that provider id later.
    let late_b = put(&q, note("b")).await;
    q.record_receipt(receipt_on(
        "a",
        "LATER",
        ReceiptStatus::Failed,
        "undelivered",
    ))
    .await
    .unwrap();
    deliver(&q, &late_b, "b", "LATER").await;
    let view = q.get(&late_b).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert!(view.receipts.is_empty());

    // The channel's own receipt still matches.
    let answer = q
        .record_receipt(receipt_on(
            "b",
            "SAME",
            ReceiptStatus::Failed,
            "undelivered",
        ))
        .await
        .unwrap();
    assert_eq!(answer.notification_id, Some(on_b.clone()));
    assert_eq!(q.get(&on_b).await.unwrap().unwrap().state, State::Failed);
}

#[tokio::test]
async fn a_receipt_after_failover_matches_the_channel_that_delivered_it() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("a")).await;
    let c = q.claim(&"a".into(), 1, LEASE).await.unwrap().remove(0);
    q.complete(vec![done(
        &id,
        c.attempt,
        Outcome::Reroute {
            channel: "b".into(),
            code: "failed_over".into(),
            error: "a is down".into(),
        },
    )])
    .await
    .unwrap();
    deliver(&q, &id, "b", "B-1").await;
    let from_a = q
        .record_receipt(receipt_on("a", "B-1", ReceiptStatus::Failed, "undelivered"))
        .await
        .unwrap();
    assert_eq!(from_a.notification_id, None);
    let from_b = q
        .record_receipt(receipt_on(
            "b",
            "B-1",
            ReceiptStatus::Delivered,
            "delivered",
        ))
        .await
        .unwrap();
    assert_eq!(from_b.notification_id, Some(id.clone()));
    assert_eq!(q.get(&id).await.unwrap().unwrap().state, State::Delivered);
}

#[tokio::test]
async fn a_replayed_receipt_is_stored_once_and_reported_as_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let id = put(&q, note("sms")).await;
    deliver(&q, &id, "sms", "SM9").await;
    let first = q
        .record_receipt(receipt("SM9", ReceiptStatus::InProgress, "sent"))
        .await
        .unwrap();
    let again = q
        .record_receipt(receipt("SM9", ReceiptStatus::InProgress, "sent"))
        .await
        .unwrap();
    assert_eq!(
        (first.duplicate, again.duplicate),
        (false, true),
        "{first:?} {again:?}"
    );
    assert_eq!(again.notification_id, Some(id.clone()));
    // A new status for the same message is a new receipt.
    let delivered = q
        .record_receipt(receipt("SM9", ReceiptStatus::Delivered, "delivered"))
        .await
        .unwrap();
    assert!(!delivered.duplicate);
    let words: Vec<String> = q
        .get(&id)
        .await
        .unwrap()
        .unwrap()
        .receipts
        .into_iter()
        .map(|r| r.provider_status)
        .collect();
    assert_eq!(words, vec!["sent", "delivered"]);

    // Unmatched ones too: a flood of one replayed request is one row.
    for _ in 0..3 {
        q.record_receipt(receipt("NOBODY", ReceiptStatus::Failed, "failed"))
            .await
            .unwrap();
    }
    let dir_path = dir.path().join("q.db");
    let conn = rusqlite::Connection::open(dir_path).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM receipts WHERE provider_id = 'NOBODY'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn one_sweep_purges_more_than_one_batch_of_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let total = sweep::PURGE_BATCH * 2 + 37;
    let items: Vec<NewNotification> = (0..total).map(|_| note("a")).collect();
    q.enqueue(items).await.unwrap();
    let unmatched = sweep::PURGE_BATCH + 3;
    {
        let conn = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute(
            "UPDATE notifications SET state = 'delivered', updated_at = 0",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO attempts (notification_id, attempt, started_at, latency_ms, outcome,
                 decision)
             SELECT id, 1, 0, 1, 'delivered', 'delivered' FROM notifications",
            [],
        )
        .unwrap();
        for i in 0..unmatched {
            conn.execute(
                "INSERT INTO receipts (channel, provider_id, status, provider_status, received_at)
                 VALUES ('a', ?1, 'delivered', 'delivered', 0)",
                [format!("P{i}")],
            )
            .unwrap();
        }
    }
    let kept = put(&q, note("a")).await;

    let report = q.sweep(&["a".into()], &KEEP).await.unwrap();

    assert_eq!(
        (report.purged, report.receipts_purged),
        (total as u64, unmatched as u64)
    );
    let conn = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    let left: (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM attempts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(left, (1, 0), "only the live notification is left");
    assert_eq!(q.get(&kept).await.unwrap().unwrap().state, State::Queued);
}

/// The query plan of `sql` on a freshly migrated queue, as the writer connection plans it, one
/// line per step.
pub(super) fn plan(sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("q.db")).unwrap();
    schema::migrate(&mut conn).unwrap();
    configure_writer(&conn).unwrap();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    let rows = stmt
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

/// Seeks to the due rows of each priority: never steps over the rows scheduled for later.
fn assert_seeks_due_rows(plan: &str) {
    assert!(
        plan.contains("USING INDEX notifications_due (channel=? AND prio_rank=? AND run_at<?)"),
        "{plan}"
    );
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}

#[test]
fn the_claim_seeks_the_due_rows_of_each_priority() {
    assert_seeks_due_rows(&plan(writer::CLAIM));
}

#[test]
fn deferring_and_failing_over_seek_the_due_rows_like_the_claim() {
    assert_seeks_due_rows(&plan(writer::DEFER_DUE));
    assert_seeks_due_rows(&plan(writer::REROUTE_DUE));
}

/// `sql`'s plan has a step containing `step`.
fn assert_plan_has(sql: &str, step: &str) {
    let plan = plan(sql);
    assert!(plan.contains(step), "{plan}");
}

#[test]
fn retention_walks_the_finished_index() {
    assert_plan_has(writer::OLD_FINISHED, "USING INDEX notifications_finished");
}

#[test]
fn a_receipt_finds_its_notification_by_the_provider_id_index() {
    assert_plan_has(
        writer::RECEIPT_TARGET,
        "USING INDEX notifications_by_provider_id",
    );
}

#[test]
fn early_receipts_are_searched_by_index_not_scanned() {
    assert_plan_has(writer::EARLY_RECEIPTS, "SEARCH receipts USING INDEX");
}

#[test]
fn the_expiry_sweep_walks_the_expiring_index() {
    assert_plan_has(writer::EXPIRE_OVERDUE, "USING INDEX notifications_expiring");
}

#[test]
fn the_oldest_due_gauge_seeks_each_priority() {
    assert_plan_has(
        schema::OLDEST_DUE,
        "USING INDEX notifications_due (channel=? AND prio_rank=? AND run_at<?)",
    );
}

#[tokio::test]
async fn oldest_due_is_the_earliest_due_time_across_priorities_ignoring_scheduled_rows() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let now = now_ms();
    for (priority, run_at_ms) in [
        (Priority::High, now - 1000),
        (Priority::Low, now - 5000),
        (Priority::Normal, now + 60_000),
    ] {
        put(
            &q,
            NewNotification {
                priority,
                run_at_ms,
                ..note("c")
            },
        )
        .await;
    }
    put(
        &q,
        NewNotification {
            run_at_ms: now + 60_000,
            ..note("later")
        },
    )
    .await;
    let got = q
        .oldest_due(&["c".into(), "later".into(), "none".into()])
        .await
        .unwrap();
    assert_eq!(got, vec![("c".into(), now - 5000)]);
}

#[test]
fn completions_find_their_row_by_primary_key() {
    for sql in [
        writer::DELIVER,
        writer::DELIVER_FLAGGED,
        writer::REQUEUE,
        writer::REQUEUE_FLAGGED,
        writer::REQUEUE_KEEPING_ERROR,
        writer::REQUEUE_KEEPING_ERROR_FLAGGED,
        writer::END,
        writer::END_FLAGGED,
        writer::MOVE,
        writer::MOVE_FLAGGED,
    ] {
        assert_plan_has(
            sql,
            "SEARCH notifications USING INDEX sqlite_autoindex_notifications_1 (id=?)",
        );
    }
}

#[test]
fn the_orphan_sweep_seeks_the_live_rows_of_its_channel() {
    assert_plan_has(
        writer::DEAD_LETTER_ORPHANS,
        "USING INDEX notifications_due (channel=? AND prio_rank=?)",
    );
}

/// A queue whose rows are one per state, each `updated_at` and `expires_at` at `at`; the
/// connection writes them as plain SQL would.
fn one_row_per_state(at: i64) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("q.db")).unwrap();
    schema::migrate(&mut conn).unwrap();
    for state in State::ALL {
        conn.execute(
            "INSERT INTO notifications (id, channel, recipient, body, state, run_at, expires_at,
                 updated_at)
             VALUES (?1, 'c', 'to', 'b', ?1, ?2, ?2, ?2)",
            params![state.as_str(), at],
        )
        .unwrap();
    }
    (dir, conn)
}

fn states_selected(conn: &Connection, sql: &str, bind: impl rusqlite::Params) -> Vec<State> {
    let mut ids: Vec<String> = conn
        .prepare(sql)
        .unwrap()
        .query_map(bind, |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ids.sort();
    ids.into_iter().map(|s| s.parse().unwrap()).collect()
}

fn sorted(states: impl Iterator<Item = State>) -> Vec<State> {
    let mut v: Vec<State> = states.collect();
    v.sort_by_key(|s| s.as_str());
    v
}

#[test]
fn retention_deletes_exactly_the_states_the_rule_allows() {
    let (_dir, conn) = one_row_per_state(1_000);
    assert_eq!(
        states_selected(&conn, writer::OLD_FINISHED, params![1_001, 100]),
        sorted(State::ALL.into_iter().filter(|s| sweep::may_purge(*s)))
    );
    assert!(states_selected(&conn, writer::OLD_FINISHED, params![1_000, 100]).is_empty());
}

#[test]
fn the_expiry_sweep_expires_exactly_what_the_rule_says() {
    for now in [999, 1_000] {
        let (_dir, conn) = one_row_per_state(1_000);
        assert_eq!(
            states_selected(
                &conn,
                writer::EXPIRE_OVERDUE,
                params![now, "expired", "m", 100]
            ),
            sorted(
                State::ALL
                    .into_iter()
                    .filter(|s| sweep::expires(*s, Some(1_000), now))
            ),
            "at {now}"
        );
    }
}

#[tokio::test]
async fn a_queue_from_before_lease_tokens_is_upgraded_and_its_rows_fenced_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in [
            include_str!("0001_init.sql"),
            include_str!("0002_failover.sql"),
            include_str!("0003_receipts.sql"),
            include_str!("0004_receipts_once.sql"),
            include_str!("0005_cheaper_writes.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        // Leased by a daemon that died, on its third attempt.
        conn.execute(
            "INSERT INTO notifications (id, channel, recipient, body, state, attempts, run_at,
                 lease_owner)
             VALUES ('old', 'c', 'to', 'hi', 'sending', 3, 0, 'gone')",
            [],
        )
        .unwrap();
    }
    let q = SqliteOutbox::open(&SqliteOptions::new(&path)).unwrap();
    let row = q.claim(&"c".into(), 1, LEASE).await.unwrap().remove(0);
    assert_eq!((row.attempt, row.lease), (4, LeaseToken(1)));
    q.complete(vec![Completion {
        events: Vec::new(),
        lease: row.lease,
        ..done("old", 4, Outcome::Delivered { provider_id: None })
    }])
    .await
    .unwrap();
    assert_eq!(
        q.get(&"old".into()).await.unwrap().unwrap().state,
        State::Delivered
    );
}

/// Free space the WAL test's filesystem reports (a stand-in for statvfs).
static WAL_TEST_FREE: AtomicU64 = AtomicU64::new(u64::MAX);

fn wal_test_free(_: &Path) -> Result<u64> {
    Ok(WAL_TEST_FREE.load(std::sync::atomic::Ordering::Relaxed))
}

fn wal_bytes(path: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Waits (at most 20 s) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn the_wal_gives_back_its_peak_size_when_free_space_runs_short() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteOutbox::open(&SqliteOptions {
        min_free_bytes: 1024 * 1024,
        free_space: wal_test_free,
        ..SqliteOptions::new(path.clone())
    })
    .unwrap();
    let big: Vec<_> = (0..16)
        .map(|_| NewNotification {
            body: Some("x".repeat(256 * 1024)),
            ..note("c")
        })
        .collect();
    q.enqueue(big).await.unwrap();
    let peak = wal_bytes(&path);
    assert!(peak > 4 * 1024 * 1024, "the WAL holds the batch: {peak}");
    // With plenty of space, checkpoints copy the WAL back but keep the file for reuse.
    put(&q, note("c")).await;
    assert!(wal_bytes(&path) >= peak);
    // The disk runs short (readiness says so): the WAL's space is given back.
    WAL_TEST_FREE.store(0, Relaxed);
    assert!(q.check_writable().await.is_err());
    eventually("the WAL is truncated", || wal_bytes(&path) < peak / 4).await;
    WAL_TEST_FREE.store(u64::MAX, Relaxed);
    // The queue goes on as before, with every row.
    put(&q, note("c")).await;
    assert_eq!(q.claim(&"c".into(), 100, LEASE).await.unwrap().len(), 18);
}

#[test]
fn the_dedup_key_purge_walks_the_window_index() {
    assert_plan_has(
        writer::PURGE_DEDUP_KEYS,
        "USING COVERING INDEX dedup_keys_until",
    );
}

#[tokio::test]
async fn the_sweep_deletes_dedup_keys_whose_window_is_over_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let keyed = |key: &str, until_ms| NewNotification {
        dedup: Some(DedupClaim {
            key: key.into(),
            until_ms,
        }),
        ..note("c")
    };
    put(&q, keyed("over", now_ms() - 1)).await;
    put(&q, keyed("holding", now_ms() + 3_600_000)).await;
    let retention = Retention {
        finished_ms: 86_400_000,
        unmatched_receipts_ms: 86_400_000,
    };

    q.sweep(&["c".into()], &retention).await.unwrap();

    let conn = Connection::open(dir.path().join("q.db")).unwrap();
    let mut stmt = conn.prepare("SELECT dedup_key FROM dedup_keys").unwrap();
    let keys: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(keys, ["holding"]);
}
