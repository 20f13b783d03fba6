//! Notifications written into the queue by other processes: `notifyd send` and plain SQL.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const LOG: &str = "[channels.log]\nkind = \"log\"\n";

#[tokio::test]
async fn a_row_inserted_with_plain_sql_by_another_process_is_delivered() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let script = format!(
        "import sqlite3\n\
         c = sqlite3.connect({:?}, timeout=5)\n\
         c.execute(\"INSERT INTO notifications (channel, recipient, subject, body) VALUES ('hooks', 'ops', 'Disk', 'db-1 full')\")\n\
         c.commit()\n",
        d.queue_path().display().to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body["subject"], "Disk");
    assert_eq!(got[0].body["body"], "db-1 full");
    let id = got[0].body["id"].as_str().unwrap().to_owned();
    d.wait_for_state(&id, "delivered").await;
}

/// Runs the `notifyd` binary with `--config config` and `args`.
pub fn notifyd(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn notifyd_send_writes_to_the_queue_and_the_running_daemon_delivers_it() {
    let d = TestDaemon::start(LOG).await;
    let config = d.dir.path().join("notifyd.toml");
    let out = notifyd(
        &config,
        &[
            "send",
            "--channel",
            "log",
            "--to",
            "a@example.com",
            "--body",
            "from the CLI",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["state"], "queued");
    d.wait_for_state(answer["id"].as_str().unwrap(), "delivered")
        .await;

    let out = notifyd(&config, &["status", answer["id"].as_str().unwrap()]);
    assert!(out.status.success());
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["state"], "delivered");
}

#[tokio::test]
async fn notifyd_send_replayed_after_its_expiry_prints_the_original() {
    let d = TestDaemon::start(LOG).await;
    let config = d.dir.path().join("notifyd.toml");
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let args = [
        "send",
        "--channel",
        "log",
        "--to",
        "x",
        "--body",
        "b",
        "--idempotency-key",
        "cli-late",
        "--expires-at",
        &expires,
    ];
    let first = notifyd(&config, &args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let again = notifyd(&config, &args);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["id"], first["id"]);
}

#[test]
fn notifyd_send_refuses_an_unknown_channel_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(&config, config_text(dir.path(), LOG)).unwrap();
    let out = notifyd(
        &config,
        &["send", "--channel", "pager", "--to", "x", "--body", "b"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--channel: no channel named \"pager\" is configured"),
        "{err}"
    );
}

#[test]
fn notifyd_send_refuses_bad_data_json_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(&config, config_text(dir.path(), LOG)).unwrap();
    let out = notifyd(
        &config,
        &["send", "--channel", "log", "--to", "x", "--data", "{oops"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data: not valid JSON"));
}

#[test]
fn notifyd_send_refuses_an_integer_outside_i64_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(&config, config_text(dir.path(), LOG)).unwrap();
    let out = notifyd(
        &config,
        &[
            "send",
            "--channel",
            "log",
            "--to",
            "x",
            "--data",
            r#"{"ids": [1, 18446744073709551616]}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data: the integer at ids[1] is outside the signed 64-bit range"),
        "{err}"
    );
}

#[test]
fn notifyd_send_refuses_data_nested_past_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(&config, config_text(dir.path(), LOG)).unwrap();
    let depth = notifyd::MAX_JSON_DEPTH + 1;
    let data = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let out = notifyd(
        &config,
        &["send", "--channel", "log", "--to", "x", "--data", &data],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data:") && err.contains("33 levels deep"),
        "{err}"
    );
}

#[test]
fn check_config_names_the_bad_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[channels.hooks]\nkind = \"webhook\"\nurl = \"ftp://nope\"\n",
    )
    .unwrap();
    let out = notifyd(&config, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("channels.hooks: `url`: must be http:// or https://"),
        "{err}"
    );
    assert!(err.contains("bad.toml"), "{err}");

    std::fs::write(&config, "[server]\nlisten = 5\n").unwrap();
    let out = notifyd(&config, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`listen`: invalid type")
            && err.contains("\"server\"")
            && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_documented_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/notifyd.toml"),
            "check-config",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configuration OK: 1 channel(s): log"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let sink = Sink::start(|n, _| {
        let status = if n < 2 {
            axum::http::StatusCode::BAD_GATEWAY
        } else {
            axum::http::StatusCode::OK
        };
        (status, vec![], std::time::Duration::ZERO)
    })
    .await;
    let d = TestDaemon::start(&webhook(
        "hooks",
        &sink.url(),
        "retry = { max_attempts = 1, base = \"10ms\", max = \"10ms\" }",
    ))
    .await;
    let a = d
        .accept(serde_json::json!({"channel": "hooks", "to": "t", "body": "a"}))
        .await;
    let b = d
        .accept(serde_json::json!({"channel": "hooks", "to": "t", "body": "b"}))
        .await;
    d.wait_for_state(&a, "dead").await;
    d.wait_for_state(&b, "dead").await;
    let config = d.dir.path().join("notifyd.toml");

    let out = notifyd(&config, &["dead-letters", "--channel", "hooks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<&str> = list["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(listed, expected);

    let out = notifyd(&config, &["replay", &a]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_for_state(&a, "delivered").await;
    let out = notifyd(&config, &["replay", &a]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "replaying a delivered one is refused"
    );

    let out = notifyd(&config, &["replay", "--all-dead", "--channel", "hooks"]);
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["replayed"], 1);
    d.wait_for_state(&b, "delivered").await;
}

#[tokio::test]
async fn notifyd_channels_shows_the_running_daemons_view() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = config_text(dir.path(), LOG).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = load_config(&text, dir.path());
    let daemon = notifyd::Daemon::start(config).await.unwrap();
    let path = dir.path().join("notifyd.toml");
    let out = tokio::task::spawn_blocking(move || notifyd(&path, &["channels"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["channels"][0]["name"], "log");
    assert_eq!(view["channels"][0]["breaker"]["state"], "closed");
    daemon.stop();
    daemon.wait().await;
}

#[test]
fn commands_on_an_existing_queue_refuse_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(&config, config_text(dir.path(), LOG)).unwrap();
    let queue = dir.path().join("queue.db");
    for args in [
        &["dead-letters"][..],
        &["status", "0190a1b2-0000-7000-8000-000000000000"],
        &["replay", "0190a1b2-0000-7000-8000-000000000000"],
        &["replay", "--all-dead", "--channel", "log"],
        &["send", "--channel", "log", "--to", "x", "--body", "b"],
    ] {
        let out = notifyd(&config, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("no queue at {}", queue.display()))
                && err.contains("queue.url = \"sqlite://"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
        assert!(!queue.exists(), "{args:?} created the queue file");
    }
}

#[test]
fn a_queue_that_cannot_be_opened_is_reported_once_naming_queue_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    let text = config_text(dir.path(), LOG).replace(
        &format!("sqlite://{}", dir.path().join("queue.db").display()),
        &format!("sqlite://{}", dir.path().join("missing/queue.db").display()),
    );
    std::fs::write(&config, text).unwrap();
    let out = notifyd(&config, &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("queue unavailable").count(), 1, "{err}");
    assert!(err.contains("queue.url \"sqlite://"), "{err}");
    assert!(err.contains("missing does not exist"), "{err}");
}
