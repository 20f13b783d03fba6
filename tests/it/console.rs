//! The console at `/ui/`, in a real headless Chromium driven over WebDriver: sign in, the
//! channel cards with a sick channel, the history searched by recipient, a timeline with a
//! delivery rule's line, dead letters replayed (one, a selection, all of a channel, one from its
//! page) until delivered, a scheduled notification cancelled, and no console error.
//!
//! With `NOTIFYD_SCREENSHOTS=1` the pages are saved to `tests/screenshots/` (the README's
//! pictures); otherwise to a temp dir.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;
use crate::webdriver::{Browser, binaries_or_skip};

const TOKEN: &str = "console-test-token-0123456789";

/// A client of the daemon's API with the token.
struct Api<'a> {
    d: &'a TestDaemon,
}

impl Api<'_> {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .d
            .http
            .post(self.d.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .d
            .http
            .get(self.d.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }

    async fn send(&self, body: Value) -> String {
        let (s, answer) = self.post("/v1/notifications", &body).await;
        assert_eq!(s, 202, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    async fn wait_state(&self, id: &str, state: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.get(&format!("/v1/notifications/{id}")).await;
            if v["state"] == state {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never became {state}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the screenshots go.
fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    if std::env::var("NOTIFYD_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/screenshots"));
        std::fs::create_dir_all(&dir).unwrap();
        (dir, None)
    } else {
        let tmp = tempfile::tempdir().unwrap();
        (tmp.path().to_owned(), Some(tmp))
    }
}

async fn shoot(browser: &Browser, dir: &std::path::Path, name: &str) {
    // Let the last render settle (fonts, the bar chart) before the picture.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_end_to_end_in_a_real_browser() {
    let Some((chromium, chromedriver)) =
        binaries_or_skip("the_console_works_end_to_end_in_a_real_browser")
    else {
        return;
    };
    // mail, sms: healthy. push: its provider is down, the breaker opens at the first failure.
    // hooks: the first four requests fail and, with one attempt each, die.
    let ok = Sink::ok().await;
    let down = Sink::always(StatusCode::SERVICE_UNAVAILABLE, "x-down", "1").await;
    let flaky = Sink::failing_first(4).await;
    let channels = [
        webhook(
            "mail",
            &ok.url(),
            "criticality = \"critical\"\nconcurrency = 8\ndedup_window = \"10m\"",
        ),
        webhook(
            "sms",
            &ok.url(),
            "rate_limit = { per_second = 5, burst = 10 }\nfailover = [\"mail\"]",
        ),
        webhook(
            "push",
            &down.url(),
            "breaker = { consecutive_failures = 1, open_for = \"10m\", max_open_for = \"10m\" }\n\
             retry = { max_attempts = 20 }",
        ),
        webhook("hooks", &flaky.url(), "retry = { max_attempts = 1 }"),
    ]
    .concat();
    let d = TestDaemon::start_with(&format!("auth_token = \"{TOKEN}\""), &channels).await;
    let api = Api { d: &d };

    // A demo queue: deliveries on the healthy channels, an outage, two dead letters.
    let people = [
        "ada@example.com",
        "grace@example.com",
        "linus@example.org",
        "+15551234567",
    ];
    let subjects = [
        "Your order has shipped",
        "Password reset",
        "Invoice #2026-118",
        "Weekly digest",
    ];
    for i in 0..12 {
        let channel = ["mail", "sms", "mail", "sms"][i % 4];
        api.send(json!({"channel": channel, "to": people[i % 4], "subject": subjects[i % 4], "body": "Hello from the demo queue."}))
            .await;
    }
    let outage = api
        .send(json!({"channel": "push", "to": "device-token-8f2a91c4", "subject": "Build finished", "body": "main is green"}))
        .await;
    let mut dead = Vec::new();
    for step in ["started", "canary at 5%", "canary at 50%", "finished"] {
        let id = api
            .send(json!({"channel": "hooks", "to": "https://ci.example.com/hook", "subject": format!("Deploy {step}"), "data": {"env": "prod"}}))
            .await;
        api.wait_state(&id, "dead").await;
        dead.push(id);
    }
    let [dead_a, dead_b, dead_c, dead_d] = <[String; 4]>::try_from(dead).unwrap();
    let send_at = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let scheduled = api
        .send(json!({"channel": "mail", "to": "ops@example.com", "subject": "Maintenance window tonight",
                     "body": "db-1 restarts at 02:00 UTC.", "send_at": send_at.format(&time::format_description::well_known::Rfc3339).unwrap()}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while api.get("/v1/channels").await["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "push")
        .unwrap()["breaker"]["state"]
        != "open"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "push's breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (shots, _keep) = screenshot_dir();
    let browser = Browser::start(&chromium, &chromedriver, 1280, 900).await;
    let ui = d.url("/ui/");

    // Sign in: the API wants a token, so the console asks for it.
    browser.goto(&ui).await;
    browser.wait_text("h1", "Sign in").await;
    browser.fill("#token", TOKEN).await;
    browser.click("#sign-in").await;

    // The overview: a card per channel, the one whose provider is down shown sick.
    browser
        .wait_text(".card[data-channel=push] .health", "breaker open")
        .await;
    let push_class = browser
        .eval(
            "return document.querySelector('.card[data-channel=push]').className",
            json!([]),
        )
        .await;
    assert!(
        push_class.as_str().unwrap().contains("sick"),
        "{push_class}"
    );
    browser
        .wait_text(".card[data-channel=mail] .health", "healthy")
        .await;
    let cards = browser
        .eval(
            "return document.querySelectorAll('.card').length",
            json!([]),
        )
        .await;
    assert_eq!(cards, 4);
    shoot(&browser, &shots, "overview").await;

    // Send one through the API and find it in the history by its recipient.
    let welcome = json!({"channel": "mail", "to": "frank@example.net", "subject": "Welcome aboard",
                         "body": "Glad to have you.", "dedup_key": "welcome"});
    let mine = api.send(welcome.clone()).await;
    api.wait_state(&mine, "delivered").await;
    // The same welcome again: merged into the first by its dedup key, a line on its timeline.
    let (s, again) = api.post("/v1/notifications", &welcome).await;
    assert_eq!((s, &again["duplicate_of"]), (200, &json!(mine)), "{again}");
    browser.click("nav a[data-nav=notifications]").await;
    browser.wait_text("h1", "Notifications").await;
    browser.fill("#f-to", "frank@example.net").await;
    browser.click("#search").await;
    browser
        .wait_for(
            "the history row",
            "return document.querySelectorAll('#results tbody tr').length === 1
                 && document.querySelector(`#results tr[data-id='${arguments[0]}']`) !== null",
            json!([mine]),
        )
        .await;
    let masked = browser
        .eval(
            "return document.querySelector('#results td.recipient').textContent",
            json!([]),
        )
        .await;
    assert_eq!(masked, "f•••@example.net", "recipients are masked in lists");
    // The filter survives the console's own refresh (which draws a new table).
    browser
        .eval(
            "window.drawnBefore = document.querySelector('#results table'); return null",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the console's next refresh",
            "const t = document.querySelector('#results table');
             return t !== null && t !== window.drawnBefore",
            json!([]),
        )
        .await;
    let kept = browser
        .eval("return document.querySelector('#f-to').value", json!([]))
        .await;
    assert_eq!(kept, "frank@example.net");

    // Its timeline.
    browser
        .click(&format!("#results tr[data-id='{mine}'] a"))
        .await;
    browser.wait_text("#timeline", "Attempt 1").await;
    browser.wait_text("#timeline", "delivered").await;
    browser.wait_text("#content", "Glad to have you.").await;
    browser
        .wait_text("#timeline li[data-rule=dedup]", "dedup key \"welcome\"")
        .await;
    browser.wait_text("#duplicates", "1").await;
    let hidden = browser
        .eval(
            "return document.querySelector('#recipient').textContent",
            json!([]),
        )
        .await;
    assert_eq!(hidden, "f•••@example.net");
    browser.click("#reveal-recipient").await;
    browser.wait_text("#recipient", "frank@example.net").await;

    // The whole history, for the picture.
    browser.goto(&format!("{ui}#/notifications")).await;
    browser.wait_text("#results", "hooks").await;
    shoot(&browser, &shots, "notifications").await;
    browser.goto(&format!("{ui}#/n/{outage}")).await;
    browser.wait_text("#timeline", "Attempt 1").await;
    shoot(&browser, &shots, "detail").await;

    // Replay a dead letter from the console and watch it become delivered.
    browser.goto(&format!("{ui}#/dead?channel=hooks")).await;
    browser
        .wait_for(
            "the four dead letters",
            "return document.querySelectorAll('tbody tr').length === 4",
            json!([]),
        )
        .await;
    shoot(&browser, &shots, "dead-letters").await;
    browser
        .click(&format!("tr[data-id='{dead_a}'] .replay-one"))
        .await;
    browser.wait_text(".notice", "Replayed 1").await;
    api.wait_state(&dead_a, "delivered").await;
    browser.goto(&format!("{ui}#/n/{dead_a}")).await;
    browser.wait_text(".detail-head .badge", "delivered").await;
    browser.wait_text("#timeline", "Attempt 1").await;

    // Replay a selection: tick one, replay what is ticked.
    browser.goto(&format!("{ui}#/dead?channel=hooks")).await;
    browser
        .wait_for(
            "three dead letters left",
            "return document.querySelectorAll('tbody tr').length === 3",
            json!([]),
        )
        .await;
    browser
        .click(&format!("tr[data-id='{dead_b}'] input[type=checkbox]"))
        .await;
    browser
        .wait_text("#replay-selected", "Replay selected (1)")
        .await;
    browser.click("#replay-selected").await;
    browser.wait_text(".notice", "Replayed 1").await;
    api.wait_state(&dead_b, "delivered").await;
    assert_eq!(
        api.get(&format!("/v1/notifications/{dead_c}")).await["state"],
        "dead"
    );

    // Retry one from its own page.
    browser.goto(&format!("{ui}#/n/{dead_d}")).await;
    browser.wait_text(".detail-head .badge", "dead").await;
    browser.click("#retry").await;
    api.wait_state(&dead_d, "delivered").await;
    browser.wait_text(".detail-head .badge", "delivered").await;

    // Replay all of a channel, after confirming the count.
    browser.goto(&format!("{ui}#/dead?channel=hooks")).await;
    browser
        .wait_for(
            "the last dead letter alone",
            "return document.querySelectorAll('tbody tr').length === 1
                 && document.querySelector(`tr[data-id='${arguments[0]}']`) !== null",
            json!([dead_c]),
        )
        .await;
    browser.click("#replay-all").await;
    browser
        .wait_text("#confirm", "all 1 dead letter of hooks")
        .await;
    browser.click("#confirm-replay").await;
    browser.wait_text(".notice", "Replayed 1 of hooks").await;
    api.wait_state(&dead_c, "delivered").await;

    // Cancel a scheduled one.
    browser.goto(&format!("{ui}#/n/{scheduled}")).await;
    browser.wait_text(".detail-head .badge", "queued").await;
    browser.click("#cancel").await;
    browser.wait_text(".detail-head .badge", "cancelled").await;
    api.wait_state(&scheduled, "cancelled").await;

    // Readable on a phone.
    browser.resize(390, 844).await;
    browser.goto(&ui).await;
    browser
        .wait_text(".card[data-channel=push] .health", "breaker open")
        .await;
    shoot(&browser, &shots, "overview-phone").await;
    // The system's dark scheme turns the page dark.
    let light = browser
        .eval(
            "return getComputedStyle(document.body).backgroundColor",
            json!([]),
        )
        .await;
    browser.prefer_color_scheme("dark").await;
    let dark = browser
        .eval(
            "return getComputedStyle(document.body).backgroundColor",
            json!([]),
        )
        .await;
    assert_eq!(
        (light.as_str(), dark.as_str()),
        (Some("rgb(246, 247, 249)"), Some("rgb(15, 18, 22)"))
    );
    shoot(&browser, &shots, "overview-phone-dark").await;

    let errors: Vec<_> = browser
        .console_log()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    drop(browser);
    d.stop().await;
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_content_security_policy_and_no_token() {
    let d = TestDaemon::start_with(
        &format!("auth_token = \"{TOKEN}\""),
        "[channels.log]\nkind = \"log\"\n",
    )
    .await;
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/console.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ] {
        let resp = d.http.get(d.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let page = d
        .http
        .get(d.url("/ui/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script>"), "no inline script");
    let (s, session) = d.get("/ui/session").await;
    assert_eq!((s, session), (200, json!({"token_required": true})));
    let (s, _) = d.get("/v1/notifications").await;
    assert_eq!(s, 401, "the data behind the console still needs the token");
    d.stop().await;
}

#[tokio::test]
async fn without_tokens_the_console_asks_for_none() {
    let d = TestDaemon::start("[channels.log]\nkind = \"log\"\n").await;
    let (s, session) = d.get("/ui/session").await;
    assert_eq!((s, session), (200, json!({"token_required": false})));
    d.stop().await;
}
