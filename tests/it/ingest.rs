//! Drop-in ingest with the real senders: Debian's `prometheus-alertmanager` (one, and two
//! peered replicas), PyPI's `apprise` CLI (`apprise://` in both key forms, `ntfy://`), and
//! Grafana's documented payload, signed and unsigned. Each delivers through notifyd to a local
//! webhook sink. A missing program fails the test under `CI=true` and skips it elsewhere.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Sink, TestDaemon, webhook};

const TOKEN: &str = "ingest-test-token-0123456789";

/// The program at `path` or on `PATH`; `None` (with the reason printed) when it is missing and
/// this is not CI. Under `CI=true` a missing program fails the test.
fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!(
            "{name} is not installed (apt-get install prometheus-alertmanager / pip install apprise)"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

/// A free loopback port (bound, then released for the program to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (by its own pid) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The channel and ingest tables of [`daemon`].
fn tables(sink: &Sink, ingest: &str) -> String {
    format!(
        "{}{}\n[ingest.ntfy]\nlisten = \"127.0.0.1:0\"\n{ingest}",
        webhook("hooks", &sink.url(), ""),
        webhook("pager", &sink.url(), ""),
    )
}

/// A daemon with a webhook channel to `sink`, a token, these ingest tables, and ntfy's listener.
async fn daemon(sink: &Sink, ingest: &str) -> TestDaemon {
    TestDaemon::start_with(&format!("auth_token = \"{TOKEN}\""), &tables(sink, ingest)).await
}

const ROUTES: &str = "
[ingest.routes.alerts]
targets = [
  { channel = \"pager\", to = \"oncall\", when = { severity = \"critical\" } },
  { channel = \"hooks\", to = \"ops\" },
]
[ingest.routes.backups]
targets = [{ channel = \"hooks\", to = \"ops@example.com\" }]
priority = \"low\"
";

async fn post_json(d: &TestDaemon, path: &str, body: &Value) -> (u16, Value) {
    let resp = d
        .http
        .post(d.url(path))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn view(d: &TestDaemon, id: &str) -> Value {
    let resp = d
        .http
        .get(d.url(&format!("/v1/notifications/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// How many notifications the queue holds.
fn stored(d: &TestDaemon) -> i64 {
    rusqlite::Connection::open(d.queue_path())
        .unwrap()
        .query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))
        .unwrap()
}

async fn metric(d: &TestDaemon, format: &str, outcome: &str) -> u64 {
    let text = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle =
        format!("notifyd_ingest_requests_total{{format=\"{format}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|n| n.parse().unwrap())
        .unwrap_or_else(|| panic!("no {needle} in /metrics"))
}

/// Polls `check` until it holds, for at most `within`.
async fn until(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alertmanager_payload() -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighDiskUsage\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "notifyd",
        "groupLabels": {"alertname": "HighDiskUsage"},
        "commonLabels": {"alertname": "HighDiskUsage"},
        "commonAnnotations": {},
        "externalURL": "http://am-1:9093",
        "alerts": [
            {"status": "firing",
             "labels": {"alertname": "HighDiskUsage", "instance": "db-1", "severity": "critical"},
             "annotations": {"summary": "Disk 97% full on db-1"},
             "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/graph", "fingerprint": "aaaa1111"},
            {"status": "firing",
             "labels": {"alertname": "HighDiskUsage", "instance": "db-2", "severity": "warning"},
             "annotations": {"summary": "Disk 91% full on db-2"},
             "startsAt": "2026-12-01T10:01:00Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/graph", "fingerprint": "bbbb2222"}
        ]
    })
}

#[tokio::test]
async fn an_alertmanager_group_goes_to_the_targets_its_labels_pick_and_links_back() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let (status, answer) =
        post_json(&d, "/ingest/alertmanager/alerts", &alertmanager_payload()).await;
    assert_eq!(status, 200, "{answer}");
    let ids: Vec<&str> = answer["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "a critical alert in the group: pager and hooks"
    );
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    for r in &got {
        assert_eq!(r.body["subject"], "[FIRING:2] HighDiskUsage — db-1, db-2");
        assert!(
            r.body["body"]
                .as_str()
                .unwrap()
                .contains("Disk 97% full on db-1")
        );
    }
    let v = view(&d, ids[0]).await;
    assert_eq!(v["source"]["format"], "alertmanager");
    assert_eq!(v["source"]["route"], "alerts");
    assert_eq!(
        v["source"]["ids"]["group_key"],
        "{}:{alertname=\"HighDiskUsage\"}"
    );
    assert_eq!(v["source"]["ids"]["alerts"][1]["fingerprint"], "bbbb2222");
    assert_eq!(metric(&d, "alertmanager", "stored").await, 1);
    d.stop().await;
}

#[tokio::test]
async fn a_replicas_copy_of_the_same_group_is_the_same_notification() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let first = post_json(&d, "/ingest/alertmanager/alerts", &alertmanager_payload()).await;
    let mut replica = alertmanager_payload();
    replica["externalURL"] = json!("http://am-2:9093");
    let second = post_json(&d, "/ingest/alertmanager/alerts", &replica).await;
    assert_eq!((first.0, second.0), (200, 200));
    assert_eq!(second.1["notifications"][0]["duplicate"], true);
    assert_eq!(
        first.1["notifications"][0]["id"],
        second.1["notifications"][0]["id"]
    );
    assert_eq!(stored(&d), 2);
    assert_eq!(metric(&d, "alertmanager", "duplicate").await, 1);
    d.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_alertmanagers_is_a_4xx_naming_the_field_and_stores_nothing() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let (status, answer) = post_json(
        &d,
        "/ingest/alertmanager/alerts",
        &json!({"status": "firing"}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "alerts");
    let (status, answer) =
        post_json(&d, "/ingest/alertmanager/nope", &alertmanager_payload()).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_route");
    let resp = d
        .http
        .post(d.url("/ingest/alertmanager/alerts"))
        .json(&alertmanager_payload())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "no token");
    assert_eq!(stored(&d), 0);
    assert_eq!(metric(&d, "alertmanager", "refused").await, 3);
    d.stop().await;
}

#[tokio::test]
async fn every_ingest_endpoint_refuses_a_body_over_the_apis_limit_with_413_and_stores_nothing() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start_with(
        &format!("auth_token = \"{TOKEN}\"\nmax_body_bytes = 4096"),
        &tables(&sink, ROUTES),
    )
    .await;
    let ntfy = d.daemon.as_ref().unwrap().ntfy_addr().unwrap().to_string();
    let mut big = alertmanager_payload();
    big["alerts"][0]["annotations"]["summary"] = json!("y".repeat(5000));
    let big = serde_json::to_vec(&big).unwrap();
    for (format, url) in [
        ("alertmanager", d.url("/ingest/alertmanager/alerts")),
        ("grafana", d.url("/ingest/grafana/alerts")),
        ("apprise", d.url("/notify/backups")),
        ("ntfy", format!("http://{ntfy}/backups")),
    ] {
        let resp = d
            .http
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 413, "{url}");
        assert_eq!(metric(&d, format, "refused").await, 1, "{format}");
    }
    assert_eq!(stored(&d), 0);
    d.stop().await;
}

// --- Grafana -------------------------------------------------------------------------------

const GRAFANA_SECRET: &str = "grafana-shared-secret-0123";

/// The example payload of Grafana's webhook notifier documentation.
fn grafana_payload() -> Value {
    json!({
      "receiver": "My Super Webhook",
      "status": "firing",
      "orgId": 1,
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
          "annotations": {
            "description": "The system has high memory usage",
            "runbook_url": "https://myrunbook.com/runbook/1234",
            "summary": "This alert was triggered for zone us-1"
          },
          "startsAt": "2021-10-12T09:51:03.157076+02:00",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
          "fingerprint": "c6eadffa33fcdf37",
          "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
          "dashboardURL": "",
          "panelURL": "",
          "values": {"B": 44.23943737541908, "C": 1}
        },
        {
          "status": "firing",
          "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
          "annotations": {
            "description": "The system has high CPU usage",
            "runbook_url": "https://myrunbook.com/runbook/1234",
            "summary": "This alert was triggered for zone eu-1"
          },
          "startsAt": "2021-10-12T09:56:03.157076+02:00",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
          "fingerprint": "bc97ff14869b13e3",
          "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1",
          "dashboardURL": "",
          "panelURL": "",
          "values": {"B": 44.23943737541908, "C": 1}
        }
      ],
      "groupLabels": {},
      "commonLabels": {"team": "blue"},
      "commonAnnotations": {},
      "externalURL": "https://play.grafana.org/",
      "version": "1",
      "groupKey": "{}:{}",
      "truncatedAlerts": 0,
      "title": "[FIRING:2]  (blue)",
      "state": "alerting",
      "message": "**Firing**\n\nLabels:\n - alertname = T2\n - team = blue\n - zone = us-1\n"
    })
}

const GRAFANA_ROUTES: &str = "
[ingest.routes.grafana]
targets = [{ channel = \"hooks\", to = \"ops\" }]
[ingest.routes.signed]
targets = [{ channel = \"hooks\", to = \"ops\" }]
signature = { secret = \"grafana-shared-secret-0123\" }
";

fn grafana_signature(text: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GRAFANA_SECRET.as_bytes()).unwrap();
    mac.update(text);
    hex::encode(mac.finalize().into_bytes())
}

async fn post_grafana(d: &TestDaemon, route: &str, body: &[u8], headers: &[(&str, String)]) -> u16 {
    let mut req = d
        .http
        .post(d.url(&format!("/ingest/grafana/{route}")))
        .basic_auth("grafana", Some(TOKEN))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn grafanas_documented_payload_delivers_with_its_own_title_and_message() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, GRAFANA_ROUTES).await;
    let body = serde_json::to_vec(&grafana_payload()).unwrap();
    assert_eq!(post_grafana(&d, "grafana", &body, &[]).await, 200);
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["subject"], "[FIRING:2]  (blue)");
    assert!(
        got[0].body["body"]
            .as_str()
            .unwrap()
            .starts_with("**Firing**")
    );
    assert_eq!(metric(&d, "grafana", "stored").await, 1);
    d.stop().await;
}

#[tokio::test]
async fn a_signed_grafana_request_is_stored_with_or_without_a_timestamp() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, GRAFANA_ROUTES).await;
    let body = serde_json::to_vec(&grafana_payload()).unwrap();
    let signature = grafana_signature(&body);
    assert_eq!(
        post_grafana(
            &d,
            "signed",
            &body,
            &[("X-Grafana-Alerting-Signature", signature)]
        )
        .await,
        200
    );
    let mut resolved = grafana_payload();
    resolved["status"] = json!("resolved");
    let body = serde_json::to_vec(&resolved).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut signed = now.clone().into_bytes();
    signed.push(b':');
    signed.extend_from_slice(&body);
    assert_eq!(
        post_grafana(
            &d,
            "signed",
            &body,
            &[
                ("X-Grafana-Alerting-Signature", grafana_signature(&signed)),
                ("X-Grafana-Alerting-Timestamp", now),
            ]
        )
        .await,
        200
    );
    assert_eq!(stored(&d), 2);
    d.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_grafana_signature_is_401_and_stores_nothing() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, GRAFANA_ROUTES).await;
    let body = serde_json::to_vec(&grafana_payload()).unwrap();
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let wrong = grafana_signature(&tampered);
    assert_eq!(
        post_grafana(
            &d,
            "signed",
            &body,
            &[("X-Grafana-Alerting-Signature", wrong)]
        )
        .await,
        401
    );
    assert_eq!(post_grafana(&d, "signed", &body, &[]).await, 401);
    assert_eq!(stored(&d), 0);
    assert_eq!(metric(&d, "grafana", "refused").await, 2);
    d.stop().await;
}

// --- Alertmanager, the real one ----------------------------------------------------------

/// A running Alertmanager with a webhook receiver pointed at `target`.
struct Alertmanager {
    _process: Running,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one; `cluster` is `(listen, peer)` for an HA replica, `None` for a single one.
    async fn start(bin: &Path, target: &str, cluster: Option<(u16, u16)>) -> Self {
        // Alertmanager flushes a new group at once when an alert's startsAt + group_wait has
        // passed, which would race the second alert of a POST into a second group (and a second,
        // rightly different, notification). The tests' alerts start now, and group_wait leaves
        // room for a loaded machine.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: notifyd\n  group_by: ['alertname']\n  group_wait: 2s\n  \
                 group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: notifyd\n  \
                 webhook_configs:\n  - url: {target}\n    send_resolved: true\n    \
                 http_config:\n      authorization:\n        credentials: {TOKEN}\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match cluster {
            None => {
                cmd.arg("--cluster.listen-address=");
            }
            Some((listen, peer)) => {
                cmd.arg(format!("--cluster.listen-address=127.0.0.1:{listen}"))
                    .arg(format!("--cluster.peer=127.0.0.1:{peer}"))
                    // Both replicas send at once (neither waits for the other's log), so the
                    // copies reach notifyd; a settled cluster is not waited for.
                    .arg("--cluster.peer-timeout=1ms")
                    .arg("--cluster.settle-timeout=100ms")
                    .arg("--cluster.gossip-interval=1s");
            }
        }
        let process = Running(cmd.spawn().unwrap());
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        until(
            Duration::from_secs(20),
            "Alertmanager to be ready",
            async || {
                http.get(format!("{url}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
        Self {
            _process: process,
            url,
            _dir: dir,
        }
    }

    /// Posts alerts to its v2 API, as Prometheus does.
    async fn post_alerts(&self, alerts: &Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
}

fn disk_alerts(starts: &str, ends: Option<&str>) -> Value {
    let alert = |instance: &str| {
        let mut a = json!({
            "labels": {"alertname": "HighDiskUsage", "instance": instance, "severity": "warning"},
            "annotations": {"summary": format!("Disk almost full on {instance}")},
            "startsAt": starts,
            "generatorURL": "http://prometheus.example/graph",
        });
        if let Some(ends) = ends {
            a["endsAt"] = json!(ends);
        }
        a
    };
    json!([alert("db-1"), alert("db-2")])
}

fn rfc3339(offset: Duration, before: bool) -> String {
    use time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let t = if before { now - offset } else { now + offset };
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn the_real_alertmanager_fires_and_resolves_through_notifyd_once_each() {
    let Some(bin) = program("prometheus-alertmanager") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let am = Alertmanager::start(&bin, &d.url("/ingest/alertmanager/alerts"), None).await;
    let starts = rfc3339(Duration::ZERO, true);
    am.post_alerts(&disk_alerts(&starts, None)).await;
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        got[0].body["subject"],
        "[FIRING:2] HighDiskUsage — db-1, db-2"
    );
    am.post_alerts(&disk_alerts(
        &starts,
        Some(&rfc3339(Duration::from_secs(1), true)),
    ))
    .await;
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(
        got[1].body["subject"],
        "[RESOLVED] HighDiskUsage — db-1, db-2"
    );
    assert_eq!(
        stored(&d),
        2,
        "one notification for firing, one for resolved"
    );
    assert_eq!(sink.received().len(), 2);
    d.stop().await;
}

#[tokio::test]
async fn two_alertmanager_replicas_sending_the_same_group_make_one_notification() {
    let Some(bin) = program("prometheus-alertmanager") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let target = d.url("/ingest/alertmanager/alerts");
    let (c1, c2) = (free_port(), free_port());
    let am1 = Alertmanager::start(&bin, &target, Some((c1, c2))).await;
    let am2 = Alertmanager::start(&bin, &target, Some((c2, c1))).await;
    // Prometheus sends every alert to every replica, with the same start time.
    let alerts = disk_alerts(&rfc3339(Duration::ZERO, true), None);
    am1.post_alerts(&alerts).await;
    am2.post_alerts(&alerts).await;
    until(
        Duration::from_secs(20),
        "both replicas to send",
        async || {
            metric(&d, "alertmanager", "stored").await
                + metric(&d, "alertmanager", "duplicate").await
                >= 2
        },
    )
    .await;
    assert_eq!(metric(&d, "alertmanager", "stored").await, 1);
    assert_eq!(stored(&d), 1);
    sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sink.received().len(), 1);
    d.stop().await;
}

// --- Apprise, the real client -------------------------------------------------------------

/// The Apprise CLI sending "Backup" / "Nightly backup failed" to `url`.
fn apprise_command(bin: &Path, url: &str, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["-vv", "-t", "Backup", "-b", "Nightly backup failed"])
        .args(extra)
        .arg(url);
    cmd
}

/// Runs the Apprise CLI (bounded: it gives up on a connection after its own timeouts).
async fn apprise(bin: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    apprise_command(bin, url, extra).output().await.unwrap()
}

/// The CLI exited 0 for `url` and the sink's message `n` (0-based) is the one it sent.
async fn assert_backup_sent(out: &std::process::Output, url: &str, sink: &Sink, n: usize) {
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.wait_for(n + 1, Duration::from_secs(10)).await;
    assert_eq!(got[n].body["subject"], "Backup");
    assert_eq!(got[n].body["body"], "Nightly backup failed");
}

fn host_port(d: &TestDaemon) -> String {
    d.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn the_apprise_cli_delivers_through_both_key_forms_with_exit_code_0() {
    let Some(bin) = program("apprise") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let base = format!("apprise://:{TOKEN}@{}/backups", host_port(&d));
    for (n, url) in [
        format!("{base}?version=1"),
        format!("{base}?version=2"),
        format!("{base}?version=2&method=json"),
    ]
    .iter()
    .enumerate()
    {
        let out = apprise(&bin, url, &["-n", "failure"]).await;
        assert_backup_sent(&out, url, &sink, n).await;
    }
    assert_eq!(metric(&d, "apprise", "stored").await, 3);
    d.stop().await;
}

/// The test-only CA and server certificate in `tests/it/tls/`.
fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tls")
}

/// A TLS front for a plain-HTTP address, as the reverse proxy the README puts before notifyd
/// for `apprises://`: it serves `tls/server.pem` (for 127.0.0.1) and relays each connection.
struct TlsFront {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    async fn start(target: String) -> Self {
        use std::sync::Arc;
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(tls_dir().join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(tls_dir().join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self { port, task }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn the_apprise_cli_delivers_over_apprises_through_a_tls_front_with_exit_code_0() {
    let Some(bin) = program("apprise") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let front = TlsFront::start(host_port(&d)).await;
    let base = format!("apprises://:{TOKEN}@127.0.0.1:{}/backups", front.port);
    for (n, url) in [format!("{base}?version=1"), format!("{base}?version=2")]
        .iter()
        .enumerate()
    {
        // The client verifies the certificate, against the test CA.
        let out = apprise_command(&bin, url, &[])
            .env("REQUESTS_CA_BUNDLE", tls_dir().join("ca.pem"))
            .output()
            .await
            .unwrap();
        assert_backup_sent(&out, url, &sink, n).await;
    }
    assert_eq!(metric(&d, "apprise", "stored").await, 2);
    d.stop().await;
}

#[tokio::test]
async fn apprise_tags_sent_by_the_cli_pick_the_tagged_targets() {
    let Some(bin) = program("apprise") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(
        &sink,
        "[ingest.routes.ops]\ntargets = [\n\
           { channel = \"pager\", to = \"oncall\", tags = [\"devops\"] },\n\
           { channel = \"hooks\", to = \"everyone\" },\n]\n",
    )
    .await;
    let base = format!("apprise://:{TOKEN}@{}/ops", host_port(&d));
    for (n, (url, to)) in [
        (format!("{base}?tags=devops,admin"), "oncall"),
        (base.clone(), "everyone"),
    ]
    .iter()
    .enumerate()
    {
        let out = apprise(&bin, url, &[]).await;
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = sink.wait_for(n + 1, Duration::from_secs(10)).await;
        assert_eq!(got[n].body["to"], *to, "{url}");
    }
    assert_eq!(stored(&d), 2);
    d.stop().await;
}

#[tokio::test]
async fn the_apprise_cli_hears_a_failure_for_an_unknown_key() {
    let Some(bin) = program("apprise") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let url = format!("apprise://:{TOKEN}@{}/nope", host_port(&d));
    let out = apprise(&bin, &url, &[]).await;
    assert!(!out.status.success());
    assert_eq!(stored(&d), 0);
    d.stop().await;
}

#[tokio::test]
async fn the_apprise_ntfy_plugin_publishes_to_notifyds_ntfy_listener() {
    let Some(bin) = program("apprise") else {
        return;
    };
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let ntfy = d.daemon.as_ref().unwrap().ntfy_addr().unwrap().to_string();
    let url = format!("ntfy://notifyd:{TOKEN}@{ntfy}/backups?priority=max");
    let out = apprise(&bin, &url, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["subject"], "Backup");
    assert_eq!(got[0].body["body"], "Nightly backup failed");
    assert_eq!(stored(&d), 1);
    let id: String = rusqlite::Connection::open(d.queue_path())
        .unwrap()
        .query_row("SELECT id FROM notifications", [], |r| r.get(0))
        .unwrap();
    let v = view(&d, &id).await;
    assert_eq!(
        v["priority"], "high",
        "ntfy's max priority is notifyd's high"
    );
    assert_eq!(v["source"]["format"], "ntfy");
    assert_eq!(v["source"]["ids"]["topic"], "backups");
    d.stop().await;
}

// --- ntfy, as curl would ------------------------------------------------------------------

#[tokio::test]
async fn an_ntfy_put_with_headers_and_the_auth_query_is_stored_for_later() {
    use base64::Engine;
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let ntfy = d.daemon.as_ref().unwrap().ntfy_addr().unwrap().to_string();
    let auth = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Bearer {TOKEN}"));
    let resp = reqwest::Client::new()
        .put(format!("http://{ntfy}/backups?auth={auth}"))
        .header("X-Title", "Backup")
        .header("X-Delay", "1h")
        .header("X-Tags", "warning")
        .body("Nightly backup failed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["topic"], "backups");
    assert_eq!(answer["event"], "message");
    let v = view(&d, answer["id"].as_str().unwrap()).await;
    assert_eq!(v["state"], "queued");
    assert_eq!(v["priority"], "low", "the route's priority");
    let due = time::OffsetDateTime::parse(
        v["next_attempt_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(due > time::OffsetDateTime::now_utc() + Duration::from_secs(3500));
    let unauthorized = reqwest::Client::new()
        .put(format!("http://{ntfy}/backups"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    assert_eq!(metric(&d, "ntfy", "refused").await, 1);
    let unknown = reqwest::Client::new()
        .put(format!("http://{ntfy}/elsewhere"))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(stored(&d), 1);
    d.stop().await;
}

#[tokio::test]
async fn a_reload_adds_routes_without_a_restart() {
    let sink = Sink::ok().await;
    let d = daemon(&sink, ROUTES).await;
    let url = "/notify/deploys";
    let body = json!({"title": "Deploy", "body": "v2 is out"});
    assert_eq!(post_json(&d, url, &body).await.0, 404);
    let more = format!(
        "{ROUTES}[ingest.routes.deploys]\ntargets = [{{ channel = \"hooks\", to = \"dev\" }}]\n"
    );
    let text = crate::support::config_text_with(
        d.dir.path(),
        &format!("auth_token = \"{TOKEN}\""),
        &tables(&sink, &more),
    );
    let config = crate::support::load_config(&text, d.dir.path());
    d.daemon.as_ref().unwrap().reload(config).unwrap();
    let (status, answer) = post_json(&d, url, &body).await;
    assert_eq!(status, 200, "{answer}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["to"], "dev");
    d.stop().await;
}

// --- Durability and templates -------------------------------------------------------------

#[tokio::test]
async fn a_queue_that_cannot_take_the_write_answers_503_so_alertmanager_retries() {
    use notifyd::outbox::Outbox;
    use notifyd::outbox::{SqliteOptions, SqliteOutbox};
    use notifyd::{AppState, Live, router};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::load_config(
        &crate::support::config_text(
            dir.path(),
            "[channels.log]\nkind = \"log\"\n\
             [ingest.routes.alerts]\ntargets = [{ channel = \"log\", to = \"ops\" }]\n",
        ),
        dir.path(),
    );
    let outbox = SqliteOutbox::open(&SqliteOptions {
        max_page_count: Some(1),
        ..SqliteOptions::new(dir.path().join("full.db"))
    })
    .unwrap();
    let state = AppState {
        outbox: Arc::new(outbox),
        live: Arc::new(std::sync::RwLock::new(Live {
            registry: Arc::new(notifyd::Registry::build(&config).unwrap()),
            templates: Default::default(),
            server: Arc::new(config.server.clone()),
            ingest: Arc::new(config.ingest.clone()),
        })),
        counters: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let mut payload = alertmanager_payload();
    payload["alerts"][0]["annotations"]["summary"] = json!("y".repeat(200_000));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/ingest/alertmanager/alerts"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let check = SqliteOutbox::open(&SqliteOptions::new(dir.path().join("full.db"))).unwrap();
    assert!(check.depth().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_routes_own_template_gets_the_whole_payload() {
    let sink = Sink::ok().await;
    let templates = tempfile::tempdir().unwrap();
    std::fs::create_dir(templates.path().join("page")).unwrap();
    std::fs::write(
        templates.path().join("page/subject.txt"),
        "{{ alerts | length }} x {{ commonLabels.alertname }} ({{ receiver }})",
    )
    .unwrap();
    std::fs::write(
        templates.path().join("page/body.txt"),
        "{% for a in alerts %}{{ a.labels.instance }} {% endfor %}",
    )
    .unwrap();
    let d = daemon(
        &sink,
        &format!(
            "[templates]\ndir = \"{}\"\n\
             [ingest.routes.alerts]\ntargets = [{{ channel = \"hooks\", to = \"ops\" }}]\n\
             template = \"page\"\n",
            templates.path().display()
        ),
    )
    .await;
    let (status, answer) =
        post_json(&d, "/ingest/alertmanager/alerts", &alertmanager_payload()).await;
    assert_eq!(status, 200, "{answer}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["subject"], "2 x HighDiskUsage (notifyd)");
    assert_eq!(got[0].body["body"], "db-1 db-2 ");
    d.stop().await;
}

#[tokio::test]
async fn a_target_its_channel_refuses_is_a_422_naming_the_routes_key_and_stores_nothing() {
    let sink = Sink::ok().await;
    let d = daemon(
        &sink,
        "[channels.sms]\nkind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
         auth_token = \"0123456789abcdef\"\nfrom = \"+15550001111\"\nbase_url = \"http://127.0.0.1:9\"\n\
         [ingest.routes.ops]\ntargets = [\n\
           { channel = \"hooks\", to = \"ops\" },\n\
           { channel = \"sms\", to = \"not a number\" },\n]\n",
    )
    .await;
    let (status, answer) = post_json(&d, "/notify/ops", &json!({"body": "b"})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "ingest.routes.ops.targets[1].to");
    assert_eq!(
        stored(&d),
        0,
        "one commit: the valid target is not stored alone"
    );
    d.stop().await;
}

#[tokio::test]
async fn an_untitled_message_for_e_mail_gets_its_first_line_as_subject() {
    let sink = Sink::ok().await;
    let d = daemon(
        &sink,
        "[channels.mail]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n\
         from = \"notifyd@example.com\"\n\
         [ingest.routes.backups]\ntargets = [{ channel = \"mail\", to = \"ops@example.com\" }]\n",
    )
    .await;
    let ntfy = d.daemon.as_ref().unwrap().ntfy_addr().unwrap().to_string();
    let resp = reqwest::Client::new()
        .post(format!("http://{ntfy}/backups"))
        .bearer_auth(TOKEN)
        .body("Nightly backup failed\nexit code 2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let subject: String = rusqlite::Connection::open(d.queue_path())
        .unwrap()
        .query_row("SELECT subject FROM notifications", [], |r| r.get(0))
        .unwrap();
    assert_eq!(subject, "Nightly backup failed");
    d.stop().await;
}
