//! Reloading the configuration (SIGHUP) changes channels and policies without losing anything
//! queued or in flight; an invalid configuration is refused and the old one stays in force.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_channels_while_in_flight_and_queued_notifications_survive() {
    let old = Sink::start(|_, _| (StatusCode::OK, vec![], Duration::from_millis(800))).await;
    let new = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &old.url(), "")).await;
    let in_flight = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "in flight"}))
        .await;
    old.wait_for(1, Duration::from_secs(5)).await;
    let due_soon = (time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let queued = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "queued", "send_at": due_soon}))
        .await;

    let text = config_text(
        d.dir.path(),
        &format!(
            "{}[channels.extra]\nkind = \"log\"\n",
            webhook("hooks", &new.url(), "")
        ),
    );
    let reloaded = d
        .daemon
        .as_ref()
        .unwrap()
        .reload(load_config(&text, d.dir.path()))
        .unwrap();
    assert_eq!(reloaded.channels, vec!["extra", "hooks"]);

    d.wait_for_state(&in_flight, "delivered").await;
    d.wait_for_state(&queued, "delivered").await;
    assert_eq!(
        old.received().len(),
        1,
        "the in-flight send finished on the old channel"
    );
    assert_eq!(
        new.received().len(),
        1,
        "the queued one went out through the new one"
    );
    assert_eq!(new.received()[0].body["body"], "queued");
    d.accept(json!({"channel": "extra", "to": "x", "body": "new channel"}))
        .await;
}

#[tokio::test]
async fn an_invalid_reload_changes_nothing() {
    let sink = Sink::ok().await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let text = config_text(d.dir.path(), &webhook("hooks", "ftp://nowhere/", ""));
    let err = d
        .daemon
        .as_ref()
        .unwrap()
        .reload(load_config(&text, d.dir.path()))
        .unwrap_err();
    assert!(
        err.contains("channels.hooks: `url`: must be http:// or https://"),
        "{err}"
    );
    let id = d
        .accept(json!({"channel": "hooks", "to": "t", "body": "still works"}))
        .await;
    d.wait_for_state(&id, "delivered").await;
    assert_eq!(sink.received().len(), 1);
}

async fn channel_names(http: &reqwest::Client, base: &str) -> Vec<String> {
    let v: Value = http
        .get(format!("{base}/v1/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sighup_reloads_the_file_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("notifyd.toml");
    let write = |channels: &str| {
        let text =
            config_text(dir.path(), channels).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        std::fs::write(&config, text).unwrap();
    };
    write("[channels.a]\nkind = \"log\"\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(channel_names(&http, &base).await, vec!["a"]);
    let hup = || {
        Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status()
            .unwrap()
    };

    write("[channels.a]\nkind = \"log\"\n[channels.b]\nkind = \"log\"\n");
    assert!(hup().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel_names(&http, &base).await != vec!["a", "b"] {
        assert!(Instant::now() < deadline, "the reload never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    write("[channels.a]\nkind = \"pigeon\"\n");
    assert!(hup().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        channel_names(&http, &base).await,
        vec!["a", "b"],
        "a broken file changes nothing"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "and does not stop the daemon"
    );

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
