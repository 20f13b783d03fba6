//! Delivery receipts through the running daemon: verified, attached, applied, even when they
//! arrive before our own record of the provider id.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const PUBLIC_URL: &str = "https://notify.example.com/v1/inbound/sms";

fn sms_channel(sink: &Sink) -> String {
    webhook(
        "sms",
        &sink.url(),
        &format!(
            "receipts = {{ verify = \"twilio\", auth_token = \"tw-auth-token\", url = \"{PUBLIC_URL}\" }}"
        ),
    )
}

async fn post_twilio(d: &TestDaemon, form: &str, signature: Option<String>) -> (u16, Value) {
    let params: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    let sig = signature
        .unwrap_or_else(|| notifyd::twilio_signature("tw-auth-token", PUBLIC_URL, &params));
    let resp = d
        .http
        .post(d.url("/v1/inbound/sms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_twilio_undelivered_callback_fails_the_delivered_notification() {
    let sink = Sink::always(StatusCode::OK, "x-request-id", "SM100").await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    let id = d
        .accept(json!({"channel": "sms", "to": "+15551234567", "body": "hi"}))
        .await;
    d.wait_for_state(&id, "delivered").await;

    let (s, b) = post_twilio(
        &d,
        "MessageSid=SM100&MessageStatus=undelivered&ErrorCode=30003",
        None,
    )
    .await;
    assert_eq!((s, b["matched"].clone()), (200, json!(true)), "{b}");

    let (_, view) = d.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["last_error"]["code"], "30003");
    assert_eq!(view["receipts"][0]["provider_status"], "undelivered");
    assert_eq!(view["receipts"][0]["status"], "failed");
}

#[tokio::test]
async fn a_wrongly_signed_receipt_is_401_and_changes_nothing() {
    let sink = Sink::always(StatusCode::OK, "x-request-id", "SM200").await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    let id = d
        .accept(json!({"channel": "sms", "to": "+15551234567", "body": "hi"}))
        .await;
    d.wait_for_state(&id, "delivered").await;

    let (s, b) = post_twilio(
        &d,
        "MessageSid=SM200&MessageStatus=undelivered",
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (401, json!("invalid_signature")),
        "{b}"
    );
    let resp = d
        .http
        .post(d.url("/v1/inbound/sms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM200&MessageStatus=undelivered")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "unsigned");

    let (_, view) = d.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(view["state"], "delivered");
    assert_eq!(view["receipts"], json!([]));
}

#[tokio::test]
async fn a_receipt_that_beats_our_own_write_is_stored_and_matched_later() {
    // The provider answers slowly; its callback arrives while our send is still waiting.
    let sink = Sink::start(|_, _| {
        (
            StatusCode::OK,
            vec![("x-request-id", "SM300".into())],
            Duration::from_millis(700),
        )
    })
    .await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    let id = d
        .accept(json!({"channel": "sms", "to": "+15551234567", "body": "hi"}))
        .await;
    sink.wait_for(1, Duration::from_secs(5)).await;

    let (s, b) = post_twilio(&d, "MessageSid=SM300&MessageStatus=delivered", None).await;
    assert_eq!((s, b["matched"].clone()), (200, json!(false)), "{b}");

    // Attached in the same transaction that records the delivery and its provider id.
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(
        view["receipts"][0]["provider_status"], "delivered",
        "{view}"
    );
}

#[tokio::test]
async fn signed_json_receipts_are_accepted_and_stale_ones_refused() {
    let sink = Sink::always(StatusCode::OK, "x-request-id", "relay-1").await;
    let d = TestDaemon::start(&webhook(
        "relay",
        &sink.url(),
        "receipts = { verify = \"hmac\", secret = \"relay-secret\" }",
    ))
    .await;
    let id = d
        .accept(json!({"channel": "relay", "to": "x", "body": "hi"}))
        .await;
    d.wait_for_state(&id, "delivered").await;
    let body = r#"{"provider_id":"relay-1","status":"read"}"#;
    let post = |ts: u64| {
        let sig = notifyd_channels::webhook::signature(b"relay-secret", ts, body.as_bytes());
        d.http
            .post(d.url("/v1/inbound/relay"))
            .header("content-type", "application/json")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        post(now - 600).await.unwrap().status().as_u16(),
        401,
        "a replay from 10 minutes ago"
    );
    assert_eq!(post(now).await.unwrap().status().as_u16(), 200);
    let (_, view) = d.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(view["receipts"].as_array().unwrap().len(), 1);
    assert_eq!(view["receipts"][0]["status"], "delivered");
}

/// The answer to a Twilio receipt with a wrong signature: a 401.
async fn forged_twilio_receipt(d: &TestDaemon) -> (u16, Value) {
    let forged = post_twilio(
        d,
        "MessageSid=SM1&MessageStatus=delivered",
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
    )
    .await;
    assert_eq!(forged.0, 401, "{}", forged.1);
    forged
}

#[tokio::test]
async fn receipts_for_a_channel_without_verification_are_the_same_401_as_a_bad_signature() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&format!(
        "{}[channels.log]\nkind = \"log\"\n",
        sms_channel(&sink)
    ))
    .await;
    let forged = forged_twilio_receipt(&d).await;
    assert_eq!(d.post("/v1/inbound/log", &json!({})).await, forged);
}

async fn post_twilio_to(
    d: &TestDaemon,
    channel: &str,
    auth_token: &str,
    form: &str,
) -> (u16, Value) {
    let params: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    let url = format!("https://notify.example.com/v1/inbound/{channel}");
    let resp = d
        .http
        .post(d.url(&format!("/v1/inbound/{channel}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            notifyd::twilio_signature(auth_token, &url, &params),
        )
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn twilio_channel(name: &str, sink: &Sink, auth_token: &str) -> String {
    webhook(
        name,
        &sink.url(),
        &format!(
            "receipts = {{ verify = \"twilio\", auth_token = \"{auth_token}\", url = \"https://notify.example.com/v1/inbound/{name}\" }}"
        ),
    )
}

#[tokio::test]
async fn a_receipt_signed_for_one_channel_never_changes_another_channels_notification() {
    // Both providers hand out the same message id.
    let sink = Sink::always(StatusCode::OK, "x-request-id", "SM700").await;
    let d = TestDaemon::start(&format!(
        "{}{}",
        twilio_channel("a", &sink, "token-of-a"),
        twilio_channel("b", &sink, "token-of-b")
    ))
    .await;
    let on_b = d
        .accept(json!({"channel": "b", "to": "+15551234567", "body": "hi"}))
        .await;
    d.wait_for_state(&on_b, "delivered").await;

    let (s, answer) = post_twilio_to(
        &d,
        "a",
        "token-of-a",
        "MessageSid=SM700&MessageStatus=undelivered",
    )
    .await;
    assert_eq!(
        (s, answer["matched"].clone()),
        (200, json!(false)),
        "{answer}"
    );
    let (_, view) = d.get(&format!("/v1/notifications/{on_b}")).await;
    assert_eq!(view["state"], "delivered");
    assert_eq!(view["receipts"], json!([]));

    let (s, answer) = post_twilio_to(
        &d,
        "b",
        "token-of-b",
        "MessageSid=SM700&MessageStatus=undelivered",
    )
    .await;
    assert_eq!(
        (s, answer["notification_id"].clone()),
        (200, json!(on_b)),
        "{answer}"
    );
    assert_eq!(
        d.get(&format!("/v1/notifications/{on_b}")).await.1["state"],
        "failed"
    );
}

async fn metric(d: &TestDaemon, line_start: &str) -> String {
    let text = d
        .http
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn a_replayed_receipt_is_stored_and_counted_once() {
    let sink = Sink::always(StatusCode::OK, "x-request-id", "SM800").await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    let id = d
        .accept(json!({"channel": "sms", "to": "+15551234567", "body": "hi"}))
        .await;
    d.wait_for_state(&id, "delivered").await;

    let form = "MessageSid=SM800&MessageStatus=undelivered&ErrorCode=30003";
    let (_, first) = post_twilio(&d, form, None).await;
    let (s, again) = post_twilio(&d, form, None).await;
    let (_, third) = post_twilio(&d, form, None).await;
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(
        (
            s,
            again["duplicate"].clone(),
            again["notification_id"].clone()
        ),
        (200, json!(true), json!(id)),
        "{again}"
    );
    assert_eq!(third["duplicate"], true);

    let (_, view) = d.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(view["receipts"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(
        metric(&d, "notifyd_receipts_total{status=\"failed\"}").await,
        "notifyd_receipts_total{status=\"failed\"} 1"
    );
    assert_eq!(
        metric(&d, "notifyd_inbound_receipts_total{outcome=\"matched\"}").await,
        "notifyd_inbound_receipts_total{outcome=\"matched\"} 1"
    );
    assert_eq!(
        metric(&d, "notifyd_inbound_receipts_total{outcome=\"duplicate\"}").await,
        "notifyd_inbound_receipts_total{outcome=\"duplicate\"} 2"
    );
}

#[tokio::test]
async fn refused_receipts_are_counted() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    for _ in 0..3 {
        let (s, _) = post_twilio(
            &d,
            "MessageSid=SM1&MessageStatus=delivered",
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
        )
        .await;
        assert_eq!(s, 401);
    }
    assert_eq!(
        metric(&d, "notifyd_inbound_receipts_total{outcome=\"refused\"}").await,
        "notifyd_inbound_receipts_total{outcome=\"refused\"} 3"
    );
    assert_eq!(
        metric(&d, "notifyd_inbound_receipts_total{outcome=\"unmatched\"}").await,
        "notifyd_inbound_receipts_total{outcome=\"unmatched\"} 0"
    );
}

#[tokio::test]
async fn receipts_for_an_unknown_channel_are_the_same_401_as_a_bad_signature() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    let forged = forged_twilio_receipt(&d).await;
    assert_eq!(d.post("/v1/inbound/pigeon", &json!({})).await, forged);
    assert_eq!(
        metric(&d, "notifyd_inbound_receipts_total{outcome=\"refused\"}").await,
        "notifyd_inbound_receipts_total{outcome=\"refused\"} 2"
    );
}

#[tokio::test]
async fn a_receipt_body_over_64_kib_is_413_before_any_signature_check() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&sms_channel(&sink)).await;
    let big = format!(
        "MessageSid=SM1&MessageStatus=delivered&Pad={}",
        "x".repeat(notifyd::MAX_RECEIPT_BYTES)
    );
    let (s, b) = post_twilio(&d, &big, None).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (413, json!("payload_too_large")),
        "{b}"
    );
    // Just under the limit is read (and then judged by its signature).
    let fits = format!(
        "MessageSid=SM1&MessageStatus=delivered&Pad={}",
        "x".repeat(notifyd::MAX_RECEIPT_BYTES - 100)
    );
    let (s, b) = post_twilio(&d, &fits, None).await;
    assert_eq!((s, b["matched"].clone()), (200, json!(false)), "{b}");
}
