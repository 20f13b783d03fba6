//! Daemons on a shared PostgreSQL queue: the whole path, API to a real HTTP receiver, and the
//! work only one of them does at a time.

use std::collections::HashSet;
use std::time::Duration;

use notifyd::Daemon;
use notifyd::Preferences;
use notifyd::outbox::{
    AttemptRecord, ClaimedPreferences, Clock, Completion, Enqueued, ManualClock, NewNotification,
    Outbox, Outcome, Priority, Retention, State, SweepReport,
};
use notifyd::outbox::{PgOptions, PgOutbox};
use serde_json::json;

use crate::postgres_server::{TestSchema, server_url};
use crate::support::*;

/// A daemon in this process on the PostgreSQL queue in `schema`, with these channels.
pub(crate) async fn start_on(schema: &TestSchema, channels: &str) -> TestDaemon {
    start_polling_every(schema, "50ms", channels).await
}

/// [`start_on`] with the dispatcher's `poll_interval`.
pub(crate) async fn start_polling_every(
    schema: &TestSchema,
    poll: &str,
    channels: &str,
) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queue]\nurl = \"{}\"\nschema = \"{}\"\n\
         max_connections = 4\n\
         [dispatcher]\npoll_interval = \"{poll}\"\nsweep_interval = \"200ms\"\nshutdown_grace = \"2s\"\n\
         [log]\nlevel = \"warn\"\n{channels}",
        server_url(),
        schema.name,
    );
    let config = load_config(&text, dir.path());
    let daemon = Daemon::start(config).await.unwrap();
    let base = format!("http://{}", daemon.addr());
    TestDaemon {
        daemon: Some(daemon),
        dir,
        base,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn a_daemon_on_postgres_delivers_a_notification_to_its_receiver() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let d = start_on(&schema, &webhook("hooks", &sink.url(), "")).await;
    let (status, ready) = d.get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));

    let id = d
        .accept(json!({"channel": "hooks", "to": "team", "subject": "S", "body": "B"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;

    assert_eq!(view["attempts"], 1);
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["id"], id);
    assert_eq!(got[0].body["subject"], "S");
    d.stop().await;
}

#[tokio::test]
async fn a_replayed_idempotency_key_is_answered_by_another_daemon_with_the_original() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let channels = webhook("hooks", &sink.url(), "");
    let a = start_on(&schema, &channels).await;
    let b = start_on(&schema, &channels).await;
    let body = json!({"channel": "hooks", "to": "t", "body": "b", "idempotency_key": "order-7"});

    let (first, created) = a.post("/v1/notifications", &body).await;
    let (again, replayed) = b.post("/v1/notifications", &body).await;
    let other =
        json!({"channel": "hooks", "to": "t", "body": "other", "idempotency_key": "order-7"});
    let (conflict, _) = b.post("/v1/notifications", &other).await;

    assert_eq!((first, again, conflict), (202, 200, 409));
    assert_eq!(replayed["id"], created["id"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_daemons_on_one_queue_deliver_every_notification_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let channels = webhook("hooks", &sink.url(), "");
    let a = start_on(&schema, &channels).await;
    let b = start_on(&schema, &channels).await;
    let mut ids = HashSet::new();
    for i in 0..200 {
        let d = if i % 2 == 0 { &a } else { &b };
        ids.insert(
            d.accept(json!({"channel": "hooks", "to": "t", "body": format!("n{i}")}))
                .await,
        );
    }

    sink.wait_for(200, Duration::from_secs(30)).await;
    // Once every row is delivered none is sent again: whatever the receiver got is all it gets.
    for id in &ids {
        a.wait_for_state(id, "delivered").await;
    }
    let got = sink.received();

    assert_eq!(got.len(), 200, "a notification was delivered twice");
    let delivered: HashSet<String> = got
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, ids);
    a.stop().await;
    b.stop().await;
}

/// Inserts a row the way another program would, in its own transaction, naming `columns`;
/// the new row's id.
async fn insert_with_sql(schema: &TestSchema, columns: &str, values: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let sql = format!(
        "INSERT INTO \"{}\".notifications ({columns}) VALUES ({values}) RETURNING id",
        schema.name
    );
    let id: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn a_row_another_program_inserts_with_plain_sql_is_delivered() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let d = start_on(&schema, &webhook("hooks", &sink.url(), "")).await;

    let id = insert_with_sql(
        &schema,
        "channel, recipient, subject, body",
        "'hooks', 'ops', 'Disk', 'db-1 full'",
    )
    .await;

    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body["id"], id.as_str());
    assert_eq!(got[0].body["subject"], "Disk");
    assert_eq!(got[0].body["body"], "db-1 full");
    d.wait_for_state(&id, "delivered").await;
    d.stop().await;
}

#[tokio::test]
async fn a_plain_sql_row_that_cannot_be_sent_ends_with_its_reason_and_the_channel_goes_on() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let d = start_on(&schema, &webhook("hooks", &sink.url(), "")).await;

    let unknown = insert_with_sql(&schema, "channel, recipient, body", "'pager', 'a', 'b'").await;
    let bad_json = insert_with_sql(
        &schema,
        "channel, recipient, body, tried",
        r#"'hooks', 'a', 'b', '{"not": "a list"}'"#,
    )
    .await;
    let bad_fallback = insert_with_sql(
        &schema,
        "channel, recipient, body, fallback",
        r#"'hooks', 'a', 'b', '[{"channel": "pager", "to": "x"}]'"#,
    )
    .await;
    let good = insert_with_sql(&schema, "channel, recipient, body", "'hooks', 'a', 'ok'").await;

    d.wait_for_state(&good, "delivered").await;
    let view = d.wait_for_state(&unknown, "dead").await;
    assert_eq!(view["last_error"]["code"], "unknown_channel");
    let view = d.wait_for_state(&bad_json, "dead").await;
    assert_eq!(view["last_error"]["code"], "unreadable_row");
    assert!(
        view["last_error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tried: not the JSON this daemon reads"),
        "{view}"
    );
    let view = d.wait_for_state(&bad_fallback, "failed").await;
    let message = view["last_error"]["message"].as_str().unwrap();
    assert!(message.starts_with("fallback[0].channel: "), "{view}");
    let bodies: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, vec!["ok"]);
    d.stop().await;
}

#[tokio::test]
async fn plain_sql_rows_the_daemon_cannot_decode_are_quarantined_one_by_one_on_postgres() {
    // PostgreSQL enforces types and encodings; what plain SQL can still get wrong is a number
    // out of the daemon's range and JSON of a shape it cannot read. Each such row ends dead on
    // its own, naming the column, and the good row behind them is delivered.
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let d = start_on(&schema, &webhook("hooks", &sink.url(), "")).await;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut bad = Vec::new();
    for (columns, values, reason) in [
        ("attempts", "-5".to_owned(), "attempts: -5 is out of range"),
        (
            "attempts",
            i64::MAX.to_string(),
            "attempts: 9223372036854775807 is out of range",
        ),
        // `lease + 1` would be out of bigint's range: the claim statement itself failed.
        (
            "lease",
            i64::MAX.to_string(),
            "lease: 9223372036854775807 is out of range",
        ),
        ("data", format!("'{deep}'"), "data: "),
        (
            "fallback",
            r#"'{"a": 1}'"#.to_owned(),
            "fallback: not the JSON this daemon reads",
        ),
    ] {
        let id = insert_with_sql(
            &schema,
            &format!("channel, recipient, body, {columns}"),
            &format!("'hooks', 'a', 'b', {values}"),
        )
        .await;
        bad.push((id, reason));
    }
    let good = insert_with_sql(&schema, "channel, recipient, body", "'hooks', 'a', 'ok'").await;

    d.wait_for_state(&good, "delivered").await;
    for (id, reason) in &bad {
        let view = d.wait_for_state(id, "dead").await;
        assert_eq!(view["last_error"]["code"], "unreadable_row", "{view}");
        let message = view["last_error"]["message"].as_str().unwrap();
        assert!(message.starts_with(reason), "{reason}: {message}");
    }
    let bodies: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, vec!["ok"]);
    d.stop().await;
}

/// An outbox on the queue in `schema`, reading `clock`: one daemon's store.
pub(crate) async fn outbox_on(schema: &TestSchema, clock: &ManualClock) -> PgOutbox {
    PgOutbox::connect(&PgOptions {
        schema: schema.name.clone(),
        max_connections: 2,
        clock: Clock::Manual(clock.clone()),
        ..PgOptions::new(server_url())
    })
    .await
    .unwrap()
}

/// A notification of channel `c` that expires `in_ms` from `clock`'s now.
fn expiring(clock: &ManualClock, in_ms: i64) -> NewNotification {
    let now = clock.now_ms();
    NewNotification {
        id: uuid::Uuid::now_v7().to_string().into(),
        channel: "c".into(),
        to: "ops@example.com".into(),
        subject: None,
        body: Some("b".into()),
        html: None,
        data: None,
        priority: Priority::Normal,
        run_at_ms: now + 3_600_000,
        expires_at_ms: Some(now + in_ms),
        created_at_ms: now,
        idempotency_key: None,
        content_hash: "h".into(),
        fallback: Vec::new(),
        source: None,
        deliver_between: None,
        dedup: None,
        digest: None,
        escalation: Default::default(),
    }
}

#[tokio::test]
async fn one_daemon_at_a_time_sweeps_and_another_takes_over_when_it_stops() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(1_700_000_000_000);
    let first = outbox_on(&schema, &clock).await;
    let second = outbox_on(&schema, &clock).await;
    let known = vec![notifyd::outbox::ChannelName::from("c")];
    let retention = Retention {
        finished_ms: 86_400_000,
        unmatched_receipts_ms: 86_400_000,
    };
    let expired_ids = |r: SweepReport| r.expired.into_iter().map(|e| e.id).collect::<Vec<_>>();

    let a = expiring(&clock, 1_000);
    first.enqueue(vec![a.clone()]).await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        expired_ids(first.sweep(&known, &retention).await.unwrap()),
        vec![a.id]
    );

    let b = expiring(&clock, 1_000);
    first.enqueue(vec![b.clone()]).await.unwrap();
    clock.advance(Duration::from_secs(2));
    // The first daemon leads: the second's sweep does nothing, and the row waits for the leader.
    assert!(expired_ids(second.sweep(&known, &retention).await.unwrap()).is_empty());
    assert_eq!(
        first.get(&b.id).await.unwrap().unwrap().state,
        State::Queued
    );

    // The first daemon stops sweeping (it died): once its term ends, the second takes over.
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        expired_ids(second.sweep(&known, &retention).await.unwrap()),
        vec![b.id]
    );
    assert!(expired_ids(first.sweep(&known, &retention).await.unwrap()).is_empty());
}

#[tokio::test]
async fn work_another_daemon_queues_wakes_this_one_before_its_next_poll() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    // Polling once an hour: only a wake-up can have it deliver within the test.
    let d = start_polling_every(&schema, "1h", &webhook("hooks", &sink.url(), "")).await;
    let clock = ManualClock::starting_at(notifyd::now_ms());
    let other = outbox_on(&schema, &clock).await;
    let mut note = expiring(&clock, 3_600_000);
    note.channel = "hooks".into();

    for n in 1..=2 {
        let note = NewNotification {
            id: uuid::Uuid::now_v7().to_string().into(),
            run_at_ms: clock.now_ms(),
            ..note.clone()
        };
        other.enqueue(vec![note.clone()]).await.unwrap();
        sink.wait_for(n, Duration::from_secs(10)).await;
        d.wait_for_state(&note.id, "delivered").await;
    }
    d.stop().await;
}

#[tokio::test]
async fn an_enqueue_that_fails_does_not_fail_others_committed_with_it() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(1_700_000_000_000);
    let outbox = std::sync::Arc::new(outbox_on(&schema, &clock).await);
    let first = expiring(&clock, 60_000);
    outbox.enqueue(vec![first.clone()]).await.unwrap();
    let others: Vec<NewNotification> = (0..8).map(|_| expiring(&clock, 60_000)).collect();

    // The same id again is refused by the store; sent at once, the others share its commit.
    let mut requests = vec![first];
    requests.extend(others.iter().cloned());
    let sent: Vec<_> = requests
        .into_iter()
        .map(|n| {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.enqueue(vec![n]).await })
        })
        .collect();
    let mut results = Vec::new();
    for request in sent {
        results.push(request.await.unwrap());
    }

    assert!(results[0].is_err());
    for (n, result) in others.iter().zip(&results[1..]) {
        assert_eq!(
            result.as_ref().unwrap(),
            &vec![Enqueued::Created { id: n.id.clone() }]
        );
    }
}

/// Round trips one call on a dedicated connection may cost besides its statement: the check of
/// a connection that sat idle over a second (a slow machine between two calls).
const IDLE_CHECK: u64 = 1;

/// An outbox on `schema` with enough connections that the hot path has its own.
async fn outbox_with_dedicated_connections(schema: &TestSchema, clock: &ManualClock) -> PgOutbox {
    PgOutbox::connect(&PgOptions {
        schema: schema.name.clone(),
        max_connections: 8,
        clock: Clock::Manual(clock.clone()),
        ..PgOptions::new(server_url())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn fifty_deliveries_are_claimed_and_written_back_in_a_statement_each() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(1_700_000_000_000);
    let outbox = outbox_with_dedicated_connections(&schema, &clock).await;
    let rows: Vec<NewNotification> = (0..50)
        .map(|_| NewNotification {
            run_at_ms: clock.now_ms(),
            ..expiring(&clock, 60_000)
        })
        .collect();
    outbox.enqueue(rows).await.unwrap();

    let before = outbox.round_trips().unwrap();
    let claimed = outbox
        .claim(&"c".into(), 50, Duration::from_secs(30))
        .await
        .unwrap();
    let claim_trips = outbox.round_trips().unwrap() - before;
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|c| Completion {
            id: c.message.id.clone().into(),
            attempt: c.attempt,
            lease: c.lease,
            outcome: Outcome::Delivered { provider_id: None },
            record: Some(AttemptRecord {
                started_at_ms: clock.now_ms(),
                latency_ms: 3,
                outcome: "delivered".into(),
                code: None,
                error: None,
                provider_id: None,
                decision: "delivered".into(),
                channel: "c".into(),
            }),
            events: Vec::new(),
        })
        .collect();
    let before = outbox.round_trips().unwrap();
    outbox.complete(completions).await.unwrap();
    let complete_trips = outbox.round_trips().unwrap() - before;

    assert_eq!(claimed.len(), 50);
    assert!(
        claim_trips <= 1 + IDLE_CHECK,
        "claim: {claim_trips} round trips"
    );
    assert!(
        complete_trips <= 1 + IDLE_CHECK,
        "complete: {complete_trips} round trips"
    );
    for c in &claimed {
        let view = outbox
            .get(&c.message.id.as_str().into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, State::Delivered);
        assert_eq!(view.attempt_log.len(), 1);
        assert_eq!(view.attempt_log[0].channel.as_deref(), Some("c"));
    }
}

#[tokio::test]
async fn a_claim_returns_each_recipients_stored_preferences_with_the_row() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(1_700_000_000_000);
    let outbox = outbox_with_dedicated_connections(&schema, &clock).await;
    let muted = Preferences {
        muted: vec!["c".into()],
        ..Preferences::default()
    };
    outbox
        .put_preferences("ops@example.com", &muted)
        .await
        .unwrap();
    let due = |to: &str| NewNotification {
        to: to.into(),
        run_at_ms: clock.now_ms(),
        ..expiring(&clock, 60_000)
    };
    let with_prefs = due("Ops Team <OPS@example.com>");
    let without = due("dev@example.com");
    outbox
        .enqueue(vec![with_prefs.clone(), without.clone()])
        .await
        .unwrap();
    let plain_sql = insert_with_sql(
        &schema,
        "channel, recipient, body, run_at",
        &format!("'c', 'ops@example.com', 'b', {}", clock.now_ms()),
    )
    .await;

    let before = outbox.round_trips().unwrap();
    let claimed = outbox
        .claim(&"c".into(), 10, Duration::from_secs(30))
        .await
        .unwrap();
    let trips = outbox.round_trips().unwrap() - before;

    let of = |id: &str| {
        claimed
            .iter()
            .find(|c| c.message.id == id)
            .map(|c| c.preferences.clone())
            .unwrap()
    };
    assert_eq!(claimed.len(), 3);
    assert_eq!(of(&with_prefs.id), ClaimedPreferences::Read(Some(muted)));
    assert_eq!(of(&without.id), ClaimedPreferences::Read(None));
    // Another program's row carries no normalized address: the dispatcher reads its own.
    assert_eq!(of(&plain_sql), ClaimedPreferences::NotRead);
    assert!(trips <= 1 + IDLE_CHECK, "claim: {trips} round trips");
}
