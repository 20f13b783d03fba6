//! Recipient preferences and the time rules end to end: through the API, the dispatcher and a
//! local receiver (an HTTP sink, or the real SMTP test server), on both backends where the
//! store matters. The daemon runs on real time: windows are set a few seconds around now.

use std::time::Duration;

use notifyd::Daemon;
use notifyd_channels::email::smtp::test_server::{Behaviour, SmtpServer};
use serde_json::{Value, json};

use crate::postgres_server::TestSchema;
use crate::support::*;

/// The rules named on a notification's timeline, oldest first.
fn rules(view: &Value) -> Vec<String> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap().to_owned())
        .collect()
}

/// The UTC wall clock `secs` from now as `HH:MM:SS`, and that instant in Unix ms (whole second).
fn utc_in(secs: i64) -> (String, i64) {
    let now = notifyd::now_ms();
    let at_ms = (now / 1000 + secs) * 1000;
    let of_day = (at_ms / 1000).rem_euclid(86_400);
    (
        format!(
            "{:02}:{:02}:{:02}",
            of_day / 3600,
            (of_day / 60) % 60,
            of_day % 60
        ),
        at_ms,
    )
}

/// Sends one notification to an opted-out recipient at each priority and counts: the normal
/// one ends `failed`/`opted_out` unsent with its event, the high one is delivered, and nothing
/// accepted is lost.
async fn opted_out_recipient(d: &TestDaemon, sink: &Sink) {
    let (status, stored) = d
        .put(
            "/v1/recipients/Alice@Example.com",
            &json!({"opted_out": ["hooks"]}),
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["address"], "alice@example.com");

    let normal = d
        .accept(json!({"channel": "hooks", "to": "alice@example.com", "body": "news"}))
        .await;
    let high = d
        .accept(
            json!({"channel": "hooks", "to": "ALICE@example.com", "body": "password reset",
                       "priority": "high"}),
        )
        .await;
    let refused = d.wait_for_state(&normal, "failed").await;
    d.wait_for_state(&high, "delivered").await;

    assert_eq!(refused["last_error"]["code"], "opted_out");
    assert_eq!(refused["attempt_log"], json!([]), "never sent");
    assert_eq!(rules(&refused), ["opted_out"]);
    let got = sink.received();
    assert_eq!(got.len(), 1, "only the high priority one was sent");
    assert_eq!(got[0].body["id"], high);
}

#[tokio::test]
async fn an_opted_out_recipient_gets_only_high_priority_on_sqlite() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    opted_out_recipient(&d, &sink).await;
    d.stop().await;
}

#[tokio::test]
async fn an_opted_out_recipient_gets_only_high_priority_on_postgres() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let d = crate::scale_out::start_on(&schema, &webhook("hooks", &sink.url(), "")).await;
    opted_out_recipient(&d, &sink).await;
    d.stop().await;
}

#[tokio::test]
async fn a_muted_channel_fails_with_muted_unless_high_priority_may_not_pass() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let (status, _) = d
        .put(
            "/v1/recipients/+4915112345678",
            &json!({"muted": ["hooks"], "high_priority_passes": false}),
        )
        .await;
    assert_eq!(status, 200);
    let id = d
        .accept(
            json!({"channel": "hooks", "to": "+4915112345678", "body": "b",
                       "priority": "high"}),
        )
        .await;
    let view = d.wait_for_state(&id, "failed").await;
    assert_eq!(view["last_error"]["code"], "muted");
    assert_eq!(rules(&view), ["muted"]);
    assert!(sink.received().is_empty());
    d.stop().await;
}

#[tokio::test]
async fn preferences_are_put_read_and_deleted_by_normalized_address() {
    let d = TestDaemon::start(&webhook("hooks", "http://127.0.0.1:9/", "")).await;
    let prefs = json!({
        "time_zone": "Europe/Paris",
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "muted": ["hooks"],
    });
    let (status, _) = d.put("/v1/recipients/Bob@Example.com", &prefs).await;
    assert_eq!(status, 200);
    let (status, got) = d.get("/v1/recipients/bob@example.com").await;
    assert_eq!(status, 200);
    assert_eq!(got["time_zone"], "Europe/Paris");
    assert_eq!(
        got["quiet_hours"],
        json!({"start": "22:00", "end": "07:00"})
    );
    assert_eq!(got["muted"], json!(["hooks"]));
    assert_eq!(got["opted_out"], json!([]));
    assert_eq!(got["high_priority_passes"], true);

    let (status, _) = d.delete("/v1/recipients/BOB@example.com").await;
    assert_eq!(status, 200);
    let (status, err) = d.get("/v1/recipients/bob@example.com").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = d.delete("/v1/recipients/bob@example.com").await;
    assert_eq!(status, 404);
    d.stop().await;
}

#[tokio::test]
async fn bad_preferences_are_refused_naming_the_field() {
    let d = TestDaemon::start(&webhook("hooks", "http://127.0.0.1:9/", "")).await;
    for (body, field, code) in [
        (
            json!({"time_zone": "Europe/Atlantis"}),
            "time_zone",
            "unknown_time_zone",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "25:00"}}),
            "quiet_hours.end",
            "invalid_window",
        ),
        (
            json!({"opted_out": ["hooks", "fax"]}),
            "opted_out[1]",
            "unknown_channel",
        ),
        (json!({"muted": "hooks"}), "muted", "invalid_field"),
        (json!({"mute": ["hooks"]}), "mute", "invalid_field"),
    ] {
        let (status, err) = d.put("/v1/recipients/carol@example.com", &body).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
    }
    let (status, err) = d
        .put("/v1/recipients/carol@example.com", &json!([null, null]))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_field"))
    );
    let (status, _) = d.get("/v1/recipients/carol@example.com").await;
    assert_eq!(status, 404, "nothing was stored");
    d.stop().await;
}

#[tokio::test]
async fn a_bad_deliver_between_is_refused_naming_its_part() {
    let d = TestDaemon::start(&webhook("hooks", "http://127.0.0.1:9/", "")).await;
    let (status, err) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "hooks", "to": "t", "body": "b",
                    "deliver_between": {"start": "09:00", "end": "17:00",
                                        "time_zone": "Mars/Olympus"}}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["field"], "deliver_between.time_zone");
    d.stop().await;
}

/// A notification due inside its recipient's quiet hours waits (no attempt, event
/// `quiet_hours`) across a daemon restart, and goes once they end, not before.
#[tokio::test]
async fn quiet_hours_hold_a_notification_across_a_restart_until_they_end() {
    let sink = Sink::ok().await;
    let channels = webhook("hooks", &sink.url(), "");
    let d = TestDaemon::start(&channels).await;
    let (start, _) = utc_in(-3600);
    let (end, end_ms) = utc_in(6);
    let (status, body) = d
        .put(
            "/v1/recipients/dave@example.com",
            &json!({"time_zone": "UTC", "quiet_hours": {"start": start, "end": end}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = d
        .accept(json!({"channel": "hooks", "to": "dave@example.com", "body": "b"}))
        .await;
    let held = wait_for_event(&d, &id, "quiet_hours").await;
    assert_eq!(held["state"], "queued");
    assert_eq!(held["attempts"], 0);
    assert_eq!(held["last_error"]["code"], "quiet_hours");

    // Restart in the middle of the window: the new daemon finds it waiting, then sends it.
    let dir = d.stop().await;
    let config = load_config(&config_text(dir.path(), &channels), dir.path());
    let daemon = Daemon::start(config).await.unwrap();
    let d = TestDaemon {
        base: format!("http://{}", daemon.addr()),
        daemon: Some(daemon),
        dir,
        http: reqwest::Client::new(),
    };
    let sent = d.wait_for_state(&id, "delivered").await;
    assert_eq!(sent["attempts"], 1);
    let started = &sent["attempt_log"][0]["at"];
    let started_ms = time::OffsetDateTime::parse(
        started.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp_nanos()
        / 1_000_000;
    assert!(
        started_ms as i64 >= end_ms,
        "sent at {started}, before the quiet hours ended"
    );
    assert_eq!(sink.received().len(), 1);
    d.stop().await;
}

/// A notification submitted outside its own `deliver_between` waits for the window to open.
#[tokio::test]
async fn deliver_between_holds_a_notification_until_its_window_opens() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let (start, start_ms) = utc_in(3);
    let (end, _) = utc_in(3600);
    let id = d
        .accept(
            json!({"channel": "hooks", "to": "erin@example.com", "body": "b",
                       "deliver_between": {"start": start, "end": end, "time_zone": "UTC"}}),
        )
        .await;
    let held = wait_for_event(&d, &id, "deliver_between").await;
    assert_eq!(held["attempts"], 0);
    let sent = d.wait_for_state(&id, "delivered").await;
    assert_eq!(rules(&sent), ["deliver_between"]);
    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(notifyd::now_ms() >= start_ms);
    d.stop().await;
}

/// Waits until the notification's timeline names `rule`; returns its view.
async fn wait_for_event(d: &TestDaemon, id: &str, rule: &str) -> Value {
    for _ in 0..400 {
        let (_, view) = d.get(&format!("/v1/notifications/{id}")).await;
        if rules(&view).iter().any(|r| r == rule) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} never got a {rule} event");
}

/// An e-mail carries the signed one-click link; a GET of it changes nothing, the RFC 8058 POST
/// opts the recipient out of the channel, and the next e-mail to them is not sent.
#[tokio::test]
async fn the_one_click_unsubscribe_link_in_an_email_opts_the_recipient_out() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    let d = TestDaemon::start(&format!(
        "[links]\nbase_url = \"https://notify.example.com\"\nsecret = \"0123456789abcdef0123\"\n\
         [channels.mail]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"news@shop.example\"\n",
        server.port
    ))
    .await;
    let mail = json!({"channel": "mail", "to": "Frank@Example.com", "subject": "News",
                      "body": "This week."});
    let first = d.accept(mail.clone()).await;
    d.wait_for_state(&first, "delivered").await;
    let data = server.received()[0].data.clone();
    let unfolded = data.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = unfolded
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: "))
        .unwrap_or_else(|| panic!("no List-Unsubscribe in {data}"));
    assert!(
        unfolded
            .lines()
            .any(|l| l == "List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{data}"
    );
    let url: String = header
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .split_whitespace()
        .collect();
    let path = url.strip_prefix("https://notify.example.com").unwrap();
    assert!(path.starts_with("/v1/unsubscribe/"), "{url}");

    let page = d.http.get(d.url(path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("List-Unsubscribe"));
    let (status, _) = d.get("/v1/recipients/frank@example.com").await;
    assert_eq!(status, 404, "a GET changes nothing");

    let forged = d
        .http
        .post(d.url(&format!("{path}x")))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    let clicked = d
        .http
        .post(d.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), 200);
    let (_, prefs) = d.get("/v1/recipients/frank@example.com").await;
    assert_eq!(prefs["opted_out"], json!(["mail"]));
    let (_, view) = d.get(&format!("/v1/notifications/{first}")).await;
    assert_eq!(rules(&view), ["unsubscribe"]);

    let second = d.accept(mail).await;
    let refused = d.wait_for_state(&second, "failed").await;
    assert_eq!(refused["last_error"]["code"], "opted_out");
    assert_eq!(server.received().len(), 1, "nothing more was sent");
    d.stop().await;
}

#[tokio::test]
async fn a_transactional_email_channel_carries_no_unsubscribe_link() {
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    let d = TestDaemon::start(&format!(
        "[links]\nbase_url = \"https://notify.example.com\"\nsecret = \"0123456789abcdef0123\"\n\
         [channels.receipts]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"orders@shop.example\"\nunsubscribe = false\n",
        server.port
    ))
    .await;
    let id = d
        .accept(
            json!({"channel": "receipts", "to": "gina@example.com", "subject": "Receipt",
                       "body": "Thanks."}),
        )
        .await;
    d.wait_for_state(&id, "delivered").await;
    assert!(!server.received()[0].data.contains("List-Unsubscribe"));
    d.stop().await;
}

/// Thirty notifications through every rule at once: each ends delivered (once) or refused with
/// its reason, none is lost or sent twice.
#[tokio::test]
async fn every_notification_through_the_rules_ends_delivered_or_refused_and_none_is_lost() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let (start, _) = utc_in(-3600);
    let (end, _) = utc_in(3);
    let (status, _) = d
        .put(
            "/v1/recipients/out@example.com",
            &json!({"opted_out": ["hooks"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = d
        .put(
            "/v1/recipients/night@example.com",
            &json!({"quiet_hours": {"start": start, "end": end}}),
        )
        .await;
    assert_eq!(status, 200);
    let (opens, _) = utc_in(2);
    let (closes, _) = utc_in(3600);
    let mut sent = Vec::new();
    for i in 0..10 {
        for (to, window) in [
            ("out@example.com", Value::Null),
            ("night@example.com", Value::Null),
            ("day@example.com", json!({"start": opens, "end": closes})),
        ] {
            let mut body = json!({"channel": "hooks", "to": to, "body": format!("n{i}")});
            if !window.is_null() {
                body["deliver_between"] = window;
            }
            sent.push((to, d.accept(body).await));
        }
    }
    let mut delivered = std::collections::HashSet::new();
    for (to, id) in &sent {
        if *to == "out@example.com" {
            let view = d.wait_for_state(id, "failed").await;
            assert_eq!(view["last_error"]["code"], "opted_out");
        } else {
            d.wait_for_state(id, "delivered").await;
            delivered.insert(id.clone());
        }
    }
    assert_eq!(delivered.len(), 20);
    let received: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received.len(), 20, "each delivered exactly once");
    assert_eq!(
        received
            .into_iter()
            .collect::<std::collections::HashSet<_>>(),
        delivered
    );
    d.stop().await;
}

/// `notifyd recipients set|get|delete` works on the queue the daemon serves: what the CLI sets
/// the API reads, and bad flags exit 2 naming the flag.
#[tokio::test]
async fn the_cli_sets_reads_and_deletes_preferences_the_api_sees() {
    use crate::enqueue_outside::notifyd;
    let d = TestDaemon::start(&webhook("hooks", "http://127.0.0.1:9/", "")).await;
    let config = d.dir.path().join("notifyd.toml");
    let out = notifyd(
        &config,
        &[
            "recipients",
            "set",
            "Hana@Example.com",
            "--time-zone",
            "Asia/Tokyo",
            "--quiet-hours",
            "23:00-06:30",
            "--opted-out",
            "hooks",
            "--high-priority-passes",
            "false",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, prefs) = d.get("/v1/recipients/hana@example.com").await;
    assert_eq!(status, 200);
    assert_eq!(
        prefs["quiet_hours"],
        json!({"start": "23:00", "end": "06:30"})
    );
    assert_eq!(prefs["opted_out"], json!(["hooks"]));
    assert_eq!(prefs["high_priority_passes"], false);

    let out = notifyd(&config, &["recipients", "get", "hana@example.com"]);
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["time_zone"], "Asia/Tokyo");

    let out = notifyd(
        &config,
        &[
            "recipients",
            "set",
            "hana@example.com",
            "--time-zone",
            "Tokyo",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--time-zone"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = notifyd(&config, &["recipients", "delete", "hana@example.com"]);
    assert!(out.status.success());
    let out = notifyd(&config, &["recipients", "get", "hana@example.com"]);
    assert_eq!(out.status.code(), Some(1));
    d.stop().await;
}

/// A row another program inserts with a `deliver_between` the API would refuse ends `failed`
/// with the API's code and field, unsent.
#[tokio::test]
async fn a_plain_sql_row_with_a_bad_deliver_between_fails_as_the_api_would_answer() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let conn = rusqlite::Connection::open(d.queue_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO notifications (id, channel, recipient, body, deliver_between)
         VALUES ('sql-window-1', 'hooks', 'ivan', 'b', '{\"start\": \"09:00\", \"end\": \"9pm\"}')",
        [],
    )
    .unwrap();
    let view = d.wait_for_state("sql-window-1", "failed").await;
    assert_eq!(view["last_error"]["code"], "invalid_window");
    let message = view["last_error"]["message"].as_str().unwrap();
    assert!(message.starts_with("deliver_between.end: "), "{message}");
    assert!(sink.received().is_empty());
    d.stop().await;
}
