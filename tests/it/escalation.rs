//! Escalation end to end: through the API to local receivers, on a queue clock the test moves
//! (the escalation waits are the queue's due times), on both backends; acknowledged by the API,
//! by the signed link in the message (GET shows, POST acknowledges, a second POST is refused)
//! and by a `read` receipt; a restart in the middle of a wait loses nothing.

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use notifyd::Daemon;
use notifyd::outbox::{Clock, ManualClock};
use serde_json::{Value, json};

use crate::postgres_server::{TestSchema, server_url};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(15);

/// Where the queue is: a SQLite file in the daemon's directory, or a PostgreSQL schema.
enum Backend {
    Sqlite,
    Postgres(TestSchema),
}

impl Backend {
    /// `None` when PostgreSQL is missing on a developer machine (under CI the test fails).
    async fn postgres() -> Option<Self> {
        TestSchema::create().await.map(Backend::Postgres)
    }

    fn queue(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("url = \"sqlite://{}\"", dir.join("queue.db").display()),
            Backend::Postgres(schema) => format!(
                "url = \"{}\"\nschema = \"{}\"\nmax_connections = 4",
                server_url(),
                schema.name
            ),
        }
    }
}

/// A pager channel whose provider ids come from the receiver's `x-request-id`, taking Twilio
/// receipts; and an SMS-like channel for the steps. The rest of the config is `extra`.
fn channels(pager: &Sink, phone: &Sink, extra: &str) -> String {
    format!(
        "{}{}{extra}",
        webhook(
            "pager",
            &pager.url(),
            "receipts = { verify = \"twilio\", auth_token = \"tw-auth-token\", url = \"https://notify.example.com/v1/inbound/pager\" }"
        ),
        webhook("phone", &phone.url(), "")
    )
}

/// A daemon in `dir` on `backend`, its queue reading `clock`.
async fn start(
    backend: &Backend,
    dir: tempfile::TempDir,
    clock: &ManualClock,
    rest: &str,
) -> TestDaemon {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queue]\n{}\n\
         [dispatcher]\npoll_interval = \"50ms\"\nsweep_interval = \"200ms\"\nshutdown_grace = \"2s\"\n\
         [log]\nlevel = \"warn\"\n{rest}",
        backend.queue(dir.path()),
    );
    let config = load_config(&text, dir.path());
    let daemon = Daemon::start_on(config, Clock::Manual(clock.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", daemon.addr());
    TestDaemon {
        daemon: Some(daemon),
        dir,
        base,
        http: reqwest::Client::new(),
    }
}

/// A disk alert to the pager, escalating to `oncall-2` 5 minutes after it is delivered, then to
/// `manager` 10 minutes after that.
fn alert() -> Value {
    json!({
        "channel": "pager", "to": "oncall-1", "body": "Disk full on db1",
        "escalate": [
            {"after": "5m", "channel": "phone", "to": "oncall-2"},
            {"after": "10m", "channel": "phone", "to": "manager"},
        ],
    })
}

/// The one notification linked to `parent` (its next step).
async fn step_after(d: &TestDaemon, parent: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, page) = d
            .get(&format!("/v1/notifications?fallback_of={parent}"))
            .await;
        assert_eq!(status, 200, "{page}");
        if let Some(step) = page["notifications"].as_array().and_then(|a| a.first()) {
            assert_eq!(page["notifications"].as_array().map(Vec::len), Some(1));
            return step.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no step after {parent}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The rules on a notification's timeline, in order.
async fn timeline(d: &TestDaemon, id: &str) -> Vec<String> {
    let (_, view) = d.get(&format!("/v1/notifications/{id}")).await;
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap().to_owned())
        .collect()
}

/// The queue's clock, a minute ahead of the wall clock the API stamps a new notification's due
/// time with, so what the test submits is due at once; from there only the test moves it.
fn queue_clock() -> ManualClock {
    ManualClock::starting_at(notifyd::now_ms() + 60_000)
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

async fn an_unacknowledged_alert_escalates_step_by_step_until_acknowledged(backend: Backend) {
    let (pager, phone) = (Sink::ok().await, Sink::ok().await);
    let clock = queue_clock();
    let d = start(
        &backend,
        tempfile::tempdir().unwrap(),
        &clock,
        &channels(&pager, &phone, ""),
    )
    .await;
    let root = d.accept(alert()).await;
    d.wait_for_state(&root, "delivered").await;
    let step1 = step_after(&d, &root).await;
    assert_eq!(
        (step1["channel"].as_str(), step1["to"].as_str()),
        (Some("phone"), Some("oncall-2"))
    );
    assert_eq!(step1["state"], "queued");

    clock.advance(minutes(5));
    let got = phone.wait_for(1, WAIT).await;
    assert_eq!(got[0].body["to"], "oncall-2");
    assert_eq!(got[0].body["body"], "Disk full on db1");
    let step1 = step1["id"].as_str().unwrap().to_owned();
    d.wait_for_state(&step1, "delivered").await;
    let step2 = step_after(&d, &step1).await;
    assert_eq!(step2["to"], "manager");

    // Acknowledged by the API before the last step is due: it is cancelled, never sent.
    let (status, ack) = d
        .post(&format!("/v1/notifications/{root}/ack"), &json!({}))
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        (ack["already"].clone(), ack["cancelled_steps"].clone()),
        (json!(false), json!(1))
    );
    let (status, again) = d
        .post(&format!("/v1/notifications/{root}/ack"), &json!({}))
        .await;
    assert_eq!((status, again["already"].clone()), (200, json!(true)));
    assert_eq!(again["acknowledged_at"], ack["acknowledged_at"]);

    clock.advance(minutes(60));
    let step2 = step2["id"].as_str().unwrap();
    let view = d.wait_for_state(step2, "cancelled").await;
    assert_eq!(view["last_error"]["code"], "acknowledged");
    assert_eq!(
        timeline(&d, &root).await,
        vec!["escalation", "escalation", "ack"]
    );
    // Nothing dropped: the alert and its first step went out, the last step is accounted for.
    assert_eq!(pager.received().len(), 1);
    assert_eq!(phone.received().len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn an_unacknowledged_alert_escalates_step_by_step_until_acknowledged_on_sqlite() {
    an_unacknowledged_alert_escalates_step_by_step_until_acknowledged(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_unacknowledged_alert_escalates_step_by_step_until_acknowledged_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    an_unacknowledged_alert_escalates_step_by_step_until_acknowledged(backend).await;
}

async fn a_restart_in_the_middle_of_the_wait_still_sends_the_step(backend: Backend) {
    let (pager, phone) = (Sink::ok().await, Sink::ok().await);
    let clock = queue_clock();
    let config = channels(&pager, &phone, "");
    let d = start(&backend, tempfile::tempdir().unwrap(), &clock, &config).await;
    let root = d.accept(alert()).await;
    d.wait_for_state(&root, "delivered").await;
    step_after(&d, &root).await;
    clock.advance(minutes(2));
    let dir = d.stop().await;

    // Another daemon on the same queue, 3 minutes later: the step is due and goes out once.
    let d = start(&backend, dir, &clock, &config).await;
    clock.advance(minutes(3));
    let got = phone.wait_for(1, WAIT).await;
    assert_eq!(got[0].body["to"], "oncall-2");
    let step1 = step_after(&d, &root).await;
    d.wait_for_state(step1["id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(phone.received().len(), 1);
    assert_eq!(pager.received().len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_the_wait_still_sends_the_step_on_sqlite() {
    a_restart_in_the_middle_of_the_wait_still_sends_the_step(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_the_wait_still_sends_the_step_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    a_restart_in_the_middle_of_the_wait_still_sends_the_step(backend).await;
}

/// Templates whose message carries the acknowledgement link, and `[links]`.
fn with_link(dir: &Path) -> String {
    let alert = dir.join("templates").join("alert");
    std::fs::create_dir_all(&alert).unwrap();
    std::fs::write(
        alert.join("body.txt"),
        "Disk full on {{ host }}. Ack: {{ ack_url }}",
    )
    .unwrap();
    format!(
        "[templates]\ndir = \"{}\"\n[links]\nbase_url = \"https://notify.example.com\"\n\
         secret = \"a-link-secret-of-32-bytes-at-least\"\n",
        dir.join("templates").display()
    )
}

/// The path of the link in a message (under the daemon's address instead of the public one).
fn link_path(body: &str) -> String {
    let at = body.find("https://notify.example.com").unwrap();
    body[at..]
        .trim_start_matches("https://notify.example.com")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_link_in_the_message_asks_on_get_acknowledges_on_post_and_only_once() {
    let (pager, phone) = (Sink::ok().await, Sink::ok().await);
    let clock = queue_clock();
    let dir = tempfile::tempdir().unwrap();
    let rest = channels(&pager, &phone, &with_link(dir.path()));
    let d = start(&Backend::Sqlite, dir, &clock, &rest).await;
    let root = d
        .accept(json!({
            "channel": "pager", "to": "oncall-1", "template": "alert", "vars": {"host": "db1"},
            "escalate": [{"after": "5m", "channel": "phone", "to": "oncall-2"}],
        }))
        .await;
    let got = pager.wait_for(1, WAIT).await;
    let body = got[0].body["body"].as_str().unwrap().to_owned();
    assert!(
        body.starts_with("Disk full on db1. Ack: https://notify.example.com/v1/links/ack/"),
        "{body}"
    );
    let link = d.url(&link_path(&body));
    d.wait_for_state(&root, "delivered").await;
    let step = step_after(&d, &root).await;

    // GET shows a confirm page and changes nothing.
    let page = d.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(timeline(&d, &root).await.iter().all(|r| r != "ack"));
    assert_eq!(step_after(&d, &root).await["state"], "queued");

    // The button's POST acknowledges; the step waiting is cancelled.
    let done = d.http.post(&link).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("Acknowledged"));
    d.wait_for_state(step["id"].as_str().unwrap(), "cancelled")
        .await;
    assert_eq!(
        timeline(&d, &root).await.last().map(String::as_str),
        Some("ack")
    );

    // A second use is refused.
    let again = d.http.post(&link).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(again.text().await.unwrap().contains("Already acknowledged"));

    // A forged token is not a link.
    let forged = d.url("/v1/links/ack/v1.ack.99999999999999.eA.AAAA");
    assert_eq!(
        d.http.get(&forged).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    clock.advance(minutes(60));
    assert_eq!(phone.received().len(), 0);
    d.stop().await;
}

#[tokio::test]
async fn a_read_receipt_for_the_message_acknowledges_the_chain() {
    let pager = Sink::always(StatusCode::OK, "x-request-id", "SM-READ-1").await;
    let phone = Sink::ok().await;
    let clock = queue_clock();
    let d = start(
        &Backend::Sqlite,
        tempfile::tempdir().unwrap(),
        &clock,
        &channels(&pager, &phone, ""),
    )
    .await;
    let root = d.accept(alert()).await;
    d.wait_for_state(&root, "delivered").await;
    let step = step_after(&d, &root).await;

    let form = "MessageSid=SM-READ-1&MessageStatus=read";
    let params: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    let signature = notifyd::twilio_signature(
        "tw-auth-token",
        "https://notify.example.com/v1/inbound/pager",
        &params,
    );
    let resp = d
        .http
        .post(d.url("/v1/inbound/pager"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    d.wait_for_state(step["id"].as_str().unwrap(), "cancelled")
        .await;
    let (_, view) = d.get(&format!("/v1/notifications/{root}")).await;
    let ack = view["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(ack["rule"], "ack");
    assert_eq!(
        ack["detail"],
        "acknowledged by receipt; 1 waiting step cancelled"
    );
    d.stop().await;
}

#[tokio::test]
async fn escalation_steps_are_validated_like_fallback_routes() {
    let (pager, phone) = (Sink::ok().await, Sink::ok().await);
    let d = TestDaemon::start(&channels(&pager, &phone, "")).await;
    let cases = [
        (
            json!([{"after": "5m", "channel": "nope", "to": "x"}]),
            "escalate[0].channel",
            "unknown_channel",
        ),
        (
            json!([{"after": "0s", "channel": "phone", "to": "x"}]),
            "escalate[0].after",
            "invalid_duration",
        ),
        (
            json!([{"after": "soon", "channel": "phone", "to": "x"}]),
            "escalate[0].after",
            "invalid_duration",
        ),
        (
            json!([{"after": "31d", "channel": "phone", "to": "x"}]),
            "escalate[0].after",
            "invalid_duration",
        ),
        (
            json!([{"after": "5m", "channel": "phone", "to": " "}]),
            "escalate[0].to",
            "invalid_recipient",
        ),
        (
            json!(vec![
                json!({"after": "1m", "channel": "phone", "to": "x"});
                9
            ]),
            "escalate",
            "too_many_items",
        ),
    ];
    for (escalate, field, code) in cases {
        let (status, body) = d
            .post(
                "/v1/notifications",
                &json!({"channel": "pager", "to": "a", "body": "b", "escalate": escalate}),
            )
            .await;
        assert_eq!(status, 422, "{escalate}: {body}");
        assert_eq!(
            (
                body["error"]["field"].as_str(),
                body["error"]["code"].as_str()
            ),
            (Some(field), Some(code)),
            "{escalate}"
        );
    }
    // Acknowledging what does not escalate: 409; what does not exist: 404.
    let plain = d
        .accept(json!({"channel": "pager", "to": "a", "body": "b"}))
        .await;
    let (status, body) = d
        .post(&format!("/v1/notifications/{plain}/ack"), &json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("nothing_to_ack"))
    );
    let (status, _) = d.post("/v1/notifications/no-such-id/ack", &json!({})).await;
    assert_eq!(status, 404);
    d.stop().await;
}

#[tokio::test]
async fn a_template_with_the_ack_link_but_no_links_configured_stops_the_start_naming_the_keys() {
    let (pager, phone) = (Sink::ok().await, Sink::ok().await);
    let dir = tempfile::tempdir().unwrap();
    let rest = with_link(dir.path());
    let without_links = rest.split("[links]").next().unwrap().to_owned();
    let text = config_text(dir.path(), &channels(&pager, &phone, &without_links));
    let config = load_config(&text, dir.path());
    let err = Daemon::start(config).await.err().unwrap().to_string();
    assert!(err.contains("alert/body.txt uses {{ ack_url }}"), "{err}");
    assert!(err.contains("links.base_url and links.secret"), "{err}");
}
