//! Rows other programs write with plain SQL, as a careless or hostile integrator would: each
//! ends in a state with a reason, none stops its channel, and each is held to the rules an API
//! request is held to. Also the bounds on fallback routes and stored content.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::enqueue_outside::notifyd;
use crate::support::*;

const LOG: &str = "[channels.log]\nkind = \"log\"\n";

/// Twilio pointed at a port where nothing listens: a send would fail as transient, so a row
/// that ends `failed` was refused before any send.
const SMS: &str = "[channels.sms]\nkind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
     auth_token = \"tw-token\"\nfrom = \"+15550001111\"\nbase_url = \"http://127.0.0.1:9\"\n\
     max_segments = 2\n";

/// Another program's connection to the daemon's queue file.
fn foreign(d: &TestDaemon) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(d.queue_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Inserts a row with plain SQL; returns its id.
fn insert(d: &TestDaemon, columns: &str, values: &str) -> String {
    foreign(d)
        .query_row(
            &format!("INSERT INTO notifications ({columns}) VALUES ({values}) RETURNING id"),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn an_unreadable_row_is_quarantined_and_its_channel_goes_on() {
    let d = TestDaemon::start(LOG).await;
    // The issue's reproduction: a body that is not UTF-8, then anything sent to `log`.
    let bad = insert(
        &d,
        "channel, recipient, body",
        "'log', 'a', CAST(X'FF' AS TEXT)",
    );

    let good = d
        .accept(json!({"channel": "log", "to": "a@example.com", "body": "hi"}))
        .await;

    d.wait_for_state(&good, "delivered").await;
    let view = d.wait_for_state(&bad, "dead").await;
    assert_eq!(view["last_error"]["code"], "unreadable_row");
    assert_eq!(
        view["last_error"]["message"],
        "body: not UTF-8 text (invalid utf-8 sequence of 1 bytes from index 0)"
    );
    let (status, dead) = d.get("/v1/dead-letters?channel=log").await;
    assert_eq!(status, 200);
    assert_eq!(dead["dead_letters"][0]["id"], bad.as_str());
    assert_eq!(
        dead["dead_letters"][0]["last_error"]["code"],
        "unreadable_row"
    );
    let out = notifyd(
        &d.dir.path().join("notifyd.toml"),
        &["dead-letters", "--channel", "log"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["dead_letters"][0]["id"], bad.as_str());
}

/// The code and field the API answers for `request`.
async fn api_refusal(d: &TestDaemon, request: Value) -> (String, String) {
    let (status, body) = d.post("/v1/notifications", &request).await;
    assert_eq!(status, 422, "{body}");
    (
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["field"].as_str().unwrap().to_owned(),
    )
}

/// Inserts with plain SQL what `request` asked the API for, and checks that the row ends
/// `failed` with the code and field the API answered.
async fn assert_refused_like_the_api(d: &TestDaemon, request: Value, columns: &str, values: &str) {
    let (code, field) = api_refusal(d, request).await;
    let id = insert(d, columns, values);

    let view = d.wait_for_state(&id, "failed").await;

    let error = &view["last_error"];
    assert_eq!(error["code"], code.as_str(), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{field}: ")),
        "{field}: {message}"
    );
}

#[tokio::test]
async fn a_plain_sql_row_with_an_invalid_recipient_for_its_kind_fails_like_the_api() {
    let d = TestDaemon::start(SMS).await;
    assert_refused_like_the_api(
        &d,
        json!({"channel": "sms", "to": "alice", "body": "hi"}),
        "channel, recipient, body",
        "'sms', 'alice', 'hi'",
    )
    .await;
}

#[tokio::test]
async fn a_plain_sql_sms_over_max_segments_fails_like_the_api() {
    let d = TestDaemon::start(SMS).await;
    let body = "a".repeat(400);
    assert_refused_like_the_api(
        &d,
        json!({"channel": "sms", "to": "+15551234567", "body": body}),
        "channel, recipient, body",
        &format!("'sms', '+15551234567', '{body}'"),
    )
    .await;
}

#[tokio::test]
async fn a_plain_sql_row_without_content_fails_like_the_api() {
    let d = TestDaemon::start(LOG).await;
    assert_refused_like_the_api(
        &d,
        json!({"channel": "log", "to": "a"}),
        "channel, recipient",
        "'log', 'a'",
    )
    .await;
}

#[tokio::test]
async fn a_plain_sql_row_with_an_empty_recipient_fails_like_the_api() {
    let d = TestDaemon::start(LOG).await;
    assert_refused_like_the_api(
        &d,
        json!({"channel": "log", "to": " ", "body": "b"}),
        "channel, recipient, body",
        "'log', ' ', 'b'",
    )
    .await;
}

#[tokio::test]
async fn a_plain_sql_row_with_a_100_kb_recipient_fails_like_the_api() {
    let d = TestDaemon::start(LOG).await;
    let to = "a".repeat(100_000);
    assert_refused_like_the_api(
        &d,
        json!({"channel": "log", "to": to, "body": "b"}),
        "channel, recipient, body",
        &format!("'log', '{to}', 'b'"),
    )
    .await;
}

#[tokio::test]
async fn a_plain_sql_row_with_a_fallback_to_an_unknown_channel_fails_like_the_api() {
    let d = TestDaemon::start(LOG).await;
    assert_refused_like_the_api(
        &d,
        json!({"channel": "log", "to": "a", "body": "b",
               "fallback": [{"channel": "pager", "to": "x"}]}),
        "channel, recipient, body, fallback",
        r#"'log', 'a', 'b', '[{"channel": "pager", "to": "x"}]'"#,
    )
    .await;
}

#[tokio::test]
async fn only_rows_other_programs_insert_are_left_to_be_checked() {
    let d = TestDaemon::start(LOG).await;
    let api = d
        .accept(
            json!({"channel": "log", "to": "a", "body": "b", "send_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let sql = insert(
        &d,
        "channel, recipient, body, run_at",
        "'log', 'a', 'b', 32503680000000",
    );
    let checked = |id: &str| -> i64 {
        foreign(&d)
            .query_row(
                "SELECT checked FROM notifications WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!((checked(&api), checked(&sql)), (1, 0));
}

fn routes(n: usize, channel: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"channel": channel, "to": format!("r{i}")}))
            .collect(),
    )
}

#[tokio::test]
async fn more_than_eight_fallback_routes_are_refused_naming_fallback() {
    let d = TestDaemon::start(LOG).await;
    for n in [9, 2001] {
        let (status, body) = d
            .post(
                "/v1/notifications",
                &json!({"channel": "log", "to": "a", "body": "b", "fallback": routes(n, "log")}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "too_many_items");
        assert_eq!(body["error"]["field"], "fallback");
    }
    let id = insert(
        &d,
        "channel, recipient, body, fallback",
        &format!("'log', 'a', 'b', '{}'", routes(2001, "log")),
    );
    let view = d.wait_for_state(&id, "failed").await;
    assert_eq!(view["last_error"]["code"], "too_many_items");
    let count: i64 = foreign(&d)
        .query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1, "no route of the refused row was queued");
}

#[tokio::test]
async fn an_eight_route_fallback_chain_walks_to_its_end() {
    let sink = Sink::always(StatusCode::BAD_REQUEST, "x-refused", "yes").await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let first = d
        .accept(json!({"channel": "hooks", "to": "r", "body": "b", "fallback": routes(8, "hooks")}))
        .await;

    let got = sink.wait_for(9, Duration::from_secs(10)).await;

    let mut to: Vec<String> = got
        .iter()
        .map(|r| r.body["to"].as_str().unwrap().to_owned())
        .collect();
    to.sort();
    let mut expected: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    expected.push("r".into());
    expected.sort();
    assert_eq!(to, expected);
    let mut id = first;
    for _ in 0..8 {
        d.wait_for_state(&id, "failed").await;
        id = d.fallback_child(&id);
    }
    let last = d.wait_for_state(&id, "failed").await;
    assert_eq!(last["fallback"], json!([]));
    let (rows, stored): (i64, i64) = foreign(&d)
        .query_row(
            "SELECT count(*), sum(length(coalesce(fallback, ''))) FROM notifications",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, 9);
    assert!(stored < 2_000, "{stored} bytes of routes stored");
}

#[tokio::test]
async fn a_plain_sql_row_over_the_content_bound_fails_naming_the_field() {
    let d = TestDaemon::start(LOG).await;
    let id = insert(
        &d,
        "channel, recipient, subject, body",
        &format!("'log', 'a', 's', '{}'", "b".repeat(1024 * 1024)),
    );
    let view = d.wait_for_state(&id, "failed").await;
    let error = &view["last_error"];
    assert_eq!(error["code"], "too_long");
    assert_eq!(
        error["message"],
        "body: the notification's content would store more than 1048576 bytes"
    );
}

#[tokio::test]
async fn a_plain_sql_row_whose_id_cannot_be_an_idempotency_key_fails_naming_id() {
    // Found by the arbitrary-rows hunt: a webhook sends the id as the Idempotency-Key header, and
    // a line break in it failed every attempt as "transient" until the retries ran out.
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let id = insert(
        &d,
        "id, channel, recipient, body",
        "'two' || char(10) || 'lines', 'hooks', 'ops', 'b'",
    );
    let view = d.wait_for_state(&id.replace('\n', "%0A"), "failed").await;
    let error = &view["last_error"];
    assert_eq!(error["code"], "invalid_field");
    assert_eq!(
        error["message"],
        "id: must be 1 to 255 printable ASCII characters, no spaces"
    );
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn a_row_claimed_past_its_attempt_budget_is_not_sent_again() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "retry = { max_attempts = 3 }",
    ))
    .await;
    // As a row whose outcomes could never be recorded is left: each claim counted an attempt.
    let id = insert(
        &d,
        "channel, recipient, body, attempts, checked",
        "'hooks', 'ops', 'b', 4, 1",
    );
    let view = d.wait_for_state(&id, "dead").await;
    assert_eq!(view["last_error"]["code"], "outcome_not_recorded");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn replaying_all_dead_letters_ends_when_one_cannot_be_named() {
    let d = TestDaemon::start(LOG).await;
    let conn = foreign(&d);
    conn.execute(
        "INSERT INTO notifications (id, channel, recipient, body) VALUES (CAST(X'FF' AS TEXT), 'log', 'a', 'b')",
        [],
    )
    .unwrap();
    let rowid = conn.last_insert_rowid();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while foreign(&d)
        .query_row(
            "SELECT state FROM notifications WHERE rowid = ?1",
            [rowid],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
        != "dead"
    {
        assert!(std::time::Instant::now() < deadline, "never quarantined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(d.dir.path().join("notifyd.toml"))
        .args(["replay", "--all-dead", "--channel", "log"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("replay --all-dead never ended");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}

#[tokio::test]
async fn a_fallback_routes_content_counts_toward_the_content_bound() {
    let d = TestDaemon::start(LOG).await;
    let half = "b".repeat(600 * 1024);
    let id = insert(
        &d,
        "channel, recipient, body, fallback",
        &format!(
            r#"'log', 'a', '{half}', '[{{"channel": "log", "to": "x", "content": {{"subject": null, "body": "{half}", "html": null, "data": null}}}}]'"#
        ),
    );
    let view = d.wait_for_state(&id, "failed").await;
    let error = &view["last_error"];
    assert_eq!(error["code"], "too_long");
    assert_eq!(
        error["message"],
        "fallback[0]: the notification's content would store more than 1048576 bytes"
    );
}
