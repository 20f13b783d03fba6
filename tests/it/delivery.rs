//! End to end through the dispatcher to a real HTTP receiver: classification and retry policy.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::*;

const FAST_RETRY: &str = "retry = { max_attempts = 3, base = \"50ms\", max = \"200ms\" }";

#[tokio::test]
async fn a_webhook_receives_the_document_and_the_receipt_is_visible() {
    let sink = Sink::always(StatusCode::OK, "x-request-id", "rcv-1").await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "secret = \"k\"")).await;
    let id = d.accept(json!({"channel": "hooks", "to": "team", "subject": "S", "body": "B", "data": {"n": 1}})).await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["provider_id"], "rcv-1");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["id"], id);
    assert_eq!(got[0].body["data"], json!({"n": 1}));
    assert_eq!(got[0].headers["idempotency-key"], id.as_str());
    assert!(
        got[0].headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1=")
    );
}

#[tokio::test]
async fn a_transient_failure_is_retried_then_delivered() {
    let sink = Sink::start(|n, _| {
        let status = if n == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (status, vec![], Duration::ZERO)
    })
    .await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), FAST_RETRY)).await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["attempts"], 2);
    let log = view["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["outcome"], "transient");
    assert_eq!(log[0]["code"], "http_503");
    assert_eq!(log[0]["decision"], "retry");
    assert_eq!(log[1]["outcome"], "delivered");
    let got = sink.received();
    assert_eq!(got[1].body["attempt"], 2);
}

#[tokio::test]
async fn exhausted_retries_make_a_dead_letter_that_can_be_replayed() {
    let sink = Sink::start(|n, _| {
        let status = if n < 3 {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::OK
        };
        (status, vec![], Duration::ZERO)
    })
    .await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), FAST_RETRY)).await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b"}))
        .await;
    let view = d.wait_for_state(&id, "dead").await;
    assert_eq!(view["attempts"], 3);
    assert_eq!(view["last_error"]["code"], "http_502");

    let (s, list) = d.get("/v1/dead-letters?channel=hooks").await;
    assert_eq!(s, 200);
    assert_eq!(list["dead_letters"][0]["id"], id);

    let (s, b) = d
        .post(&format!("/v1/dead-letters/{id}/retry"), &json!({}))
        .await;
    assert_eq!((s, b["state"].clone()), (200, json!("queued")));
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["attempts"], 1);
    assert_eq!(sink.received().len(), 4);
}

#[tokio::test]
async fn a_permanent_rejection_fails_at_once_and_queues_the_fallback() {
    let sink = Sink::start(|_, _| (StatusCode::UNPROCESSABLE_ENTITY, vec![], Duration::ZERO)).await;
    let channels = format!(
        "{}[channels.log]\nkind = \"log\"\n",
        webhook("hooks", &sink.url(), FAST_RETRY)
    );
    let d = TestDaemon::start(&channels).await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b", "fallback": [{"channel": "log", "to": "ops@example.com"}]}))
        .await;
    let view = d.wait_for_state(&id, "failed").await;
    assert_eq!(view["attempts"], 1);
    assert_eq!(view["last_error"]["code"], "http_422");
    assert_eq!(sink.received().len(), 1);
    // The fallback child is findable through the queue file.
    let child = d.fallback_child(&id);
    let child = d.wait_for_state(&child, "delivered").await;
    assert_eq!(child["channel"], "log");
    assert_eq!(child["fallback_of"], id);
}

#[tokio::test]
async fn a_notification_past_its_expiry_is_expired_not_sent() {
    // The provider asks for 3 s; the notification expires after 0.6 s, before that retry.
    let sink = Sink::always(StatusCode::SERVICE_UNAVAILABLE, "retry-after", "3").await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "retry = { max_attempts = 50, base = \"1s\", max = \"5s\" }",
    ))
    .await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(600);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b", "expires_at": expires}))
        .await;
    let view = d.wait_for_state(&id, "expired").await;
    assert_eq!(view["last_error"]["code"], "expired");
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn a_critical_notification_that_expires_is_counted_for_alerting_an_optional_one_is_not() {
    let sink = Sink::always(StatusCode::SERVICE_UNAVAILABLE, "retry-after", "3").await;
    let policy = "retry = { max_attempts = 50, base = \"1s\", max = \"5s\" }";
    let d = TestDaemon::start(&format!(
        "{}{}",
        webhook(
            "pager",
            &sink.url(),
            &format!("criticality = \"critical\"\n{policy}")
        ),
        webhook("digest", &sink.url(), policy),
    ))
    .await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(600);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut ids = Vec::new();
    for channel in ["pager", "digest"] {
        ids.push(
            d.accept(json!({"channel": channel, "to": "t", "body": "b", "expires_at": expires}))
                .await,
        );
    }
    for id in &ids {
        d.wait_for_state(id, "expired").await;
    }
    let counted = |body: &serde_json::Value, name: &str| {
        body["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["since_start"]["expired_critical"]
            .as_u64()
            .unwrap()
    };
    // The sweep that expired it counts it right after: poll, no time budget.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = d.get("/v1/channels").await;
        if counted(&body, "pager") == 1 {
            assert_eq!(
                counted(&body, "digest"),
                0,
                "optional channels are not counted"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = d
        .http
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("notifyd_expired_critical_total{channel=\"pager\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("notifyd_expired_critical_total{channel=\"digest\"} 0"));
}

#[tokio::test]
async fn a_send_held_back_by_its_recipient_limit_costs_the_channel_no_token() {
    let sink = Sink::ok().await;
    // Two channel tokens now, the next one 10 s later; one send a minute per recipient.
    let d = TestDaemon::start(&webhook(
        "sms",
        &sink.url(),
        "rate_limit = { per_minute = 6, burst = 2, per_recipient = { per_minute = 1, burst = 1 } }",
    ))
    .await;
    let a1 = d
        .accept(json!({"channel": "sms", "to": "+15550000001", "body": "1", "priority": "high"}))
        .await;
    let a2 = d
        .accept(json!({"channel": "sms", "to": "+15550000001", "body": "2", "priority": "high"}))
        .await;
    let b = d
        .accept(json!({"channel": "sms", "to": "+15550000002", "body": "3", "priority": "low"}))
        .await;
    d.wait_for_state(&a1, "delivered").await;
    let b = d.wait_for_state(&b, "delivered").await;
    let got = sink.received();
    assert_eq!(
        got.len(),
        2,
        "the second send to +15550000001 waits for its recipient"
    );
    // Had the held-back send taken the second channel token, this one would wait 10 s for the
    // third: the receiver's clock separates the two cases by seconds.
    let gap = got[1].at - got[0].at;
    assert!(gap < Duration::from_secs(5), "{gap:?}");
    assert_eq!(b["attempts"], 1);
    let (_, a2) = d.get(&format!("/v1/notifications/{a2}")).await;
    assert_eq!(a2["state"], "queued", "{a2}");
    assert_eq!(a2["attempts"], 0, "waiting for a token spends no attempt");
    assert_eq!(
        a2["attempt_log"][0]["decision"], "waited_for_rate_limit",
        "{a2}"
    );
}

#[tokio::test]
async fn priority_high_is_sent_before_normal_and_low() {
    let sink = Sink::ok().await;
    // One slot, so the order of sends is the order of claims.
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "concurrency = 1")).await;
    for p in ["low", "normal", "high"] {
        d.accept(json!({"channel": "hooks", "to": "t", "body": p, "priority": p, "send_at": "2099-01-01T00:00:00Z"}))
            .await;
    }
    // Make all three due at once by rewriting run_at through SQL, as another process could.
    let conn = rusqlite::Connection::open(d.queue_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE notifications SET run_at = 0 WHERE state = 'queued'",
        [],
    )
    .unwrap();
    let got = sink.wait_for(3, Duration::from_secs(10)).await;
    let order: Vec<String> = got
        .iter()
        .map(|r| r.body["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, vec!["high", "normal", "low"]);
}

#[tokio::test]
async fn a_graceful_stop_lets_in_flight_sends_finish() {
    let sink = Sink::start(|_, _| (StatusCode::OK, vec![], Duration::from_millis(500))).await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b"}))
        .await;
    sink.wait_for(1, Duration::from_secs(5)).await;
    let dir = d.stop().await;
    let outbox = notifyd::outbox::SqliteOutbox::open(&notifyd::outbox::SqliteOptions::new(
        dir.path().join("queue.db"),
    ))
    .unwrap();
    use notifyd::outbox::Outbox;
    let view = outbox.get(&id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(view.state, notifyd::outbox::State::Delivered);
}

#[tokio::test]
async fn on_stop_rows_claimed_ahead_of_a_slot_go_back_unsent_and_unspent() {
    let sink = Sink::start(|_, _| (StatusCode::OK, vec![], Duration::from_millis(500))).await;
    // One slot: the second row is claimed ahead and waits for it.
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "concurrency = 1")).await;
    let mut ids = Vec::new();
    for body in ["first", "second"] {
        ids.push(
            d.accept(json!({"channel": "hooks", "to": "t", "body": body}))
                .await,
        );
    }
    sink.wait_for(1, Duration::from_secs(5)).await;
    let dir = d.stop().await;
    assert_eq!(sink.received().len(), 1, "the waiting row was not sent");
    let outbox = notifyd::outbox::SqliteOutbox::open(&notifyd::outbox::SqliteOptions::new(
        dir.path().join("queue.db"),
    ))
    .unwrap();
    use notifyd::outbox::Outbox;
    let first = outbox.get(&ids[0].as_str().into()).await.unwrap().unwrap();
    assert_eq!(first.state, notifyd::outbox::State::Delivered);
    let second = outbox.get(&ids[1].as_str().into()).await.unwrap().unwrap();
    assert_eq!(second.state, notifyd::outbox::State::Queued);
    assert_eq!(
        second.attempts, 0,
        "a row that was never sent spent no attempt"
    );
}

#[tokio::test]
async fn a_send_still_running_after_the_grace_period_is_released_to_the_queue() {
    let sink = Sink::start(|_, _| (StatusCode::OK, vec![], Duration::from_secs(30))).await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "timeouts = { total = \"60s\" }",
    ))
    .await;
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "b"}))
        .await;
    sink.wait_for(1, Duration::from_secs(5)).await;
    let dir = d.stop().await; // shutdown_grace is 2s in tests
    let outbox = notifyd::outbox::SqliteOutbox::open(&notifyd::outbox::SqliteOptions::new(
        dir.path().join("queue.db"),
    ))
    .unwrap();
    use notifyd::outbox::Outbox;
    let view = outbox.get(&id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(view.state, notifyd::outbox::State::Queued);
    assert_eq!(view.attempts, 0, "an abandoned send costs no attempt");
}

#[tokio::test]
async fn a_templated_fallback_of_another_kind_gets_that_kinds_part() {
    use wiremock::matchers::{body_partial_json, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let templates = tempfile::tempdir().unwrap();
    let t = templates.path().join("alert");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        t.join("body.txt"),
        "Disk {{ disk }} is full; details follow.",
    )
    .unwrap();
    std::fs::write(t.join("slack.txt"), ":warning: {{ disk }} full").unwrap();
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"text": ":warning: db-1 full"})))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&slack)
        .await;
    let sink = Sink::start(|_, _| (StatusCode::UNPROCESSABLE_ENTITY, vec![], Duration::ZERO)).await;
    let channels = format!(
        "{}[channels.ops]\nkind = \"slack_webhook\"\nurl = \"{}/services/T0/B0/x\"\n[templates]\ndir = \"{}\"\n",
        webhook("hooks", &sink.url(), FAST_RETRY),
        slack.uri(),
        templates.path().display()
    );
    let d = TestDaemon::start(&channels).await;
    let id = d
        .accept(
            json!({"channel": "hooks", "to": "t", "template": "alert", "vars": {"disk": "db-1"},
                       "fallback": [{"channel": "ops", "to": "#ops"}]}),
        )
        .await;
    d.wait_for_state(&id, "failed").await;
    assert_eq!(
        sink.received()[0].body["body"],
        "Disk db-1 is full; details follow."
    );
    let child = d.fallback_child(&id);
    let child = d.wait_for_state(&child, "delivered").await;
    assert_eq!(child["channel"], "ops");
    slack.verify().await;
}
