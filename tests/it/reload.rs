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

const OLD_TOKEN: &str = "old-token-0123456789";
const NEW_TOKEN: &str = "new-token-0123456789";

async fn channels_status(http: &reqwest::Client, base: &str, token: Option<&str>) -> u16 {
    let mut req = http.get(format!("{base}/v1/channels"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

fn with_listen(text: &str, listen: &str) -> String {
    text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
    )
}

#[tokio::test]
async fn a_reload_rotates_api_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let log = "[channels.log]\nkind = \"log\"\n";
    let server = |token: &str| format!("auth_token = \"{token}\"");
    let text = config_text_with(dir.path(), &server(OLD_TOKEN), log);
    let daemon = notifyd::Daemon::start(load_config(&text, dir.path()))
        .await
        .unwrap();
    let base = format!("http://{}", daemon.addr());
    let http = reqwest::Client::new();
    assert_eq!(channels_status(&http, &base, Some(OLD_TOKEN)).await, 200);
    assert_eq!(channels_status(&http, &base, Some(NEW_TOKEN)).await, 401);

    let text = config_text_with(dir.path(), &server(NEW_TOKEN), log);
    daemon.reload(load_config(&text, dir.path())).unwrap();

    assert_eq!(channels_status(&http, &base, Some(NEW_TOKEN)).await, 200);
    assert_eq!(channels_status(&http, &base, Some(OLD_TOKEN)).await, 401);
    assert_eq!(channels_status(&http, &base, None).await, 401);
    daemon.stop();
    daemon.wait().await;
}

#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_a_listener_open_to_other_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let log = "[channels.log]\nkind = \"log\"\n";
    let public = with_listen(
        &config_text_with(dir.path(), &format!("auth_token = \"{OLD_TOKEN}\""), log),
        "0.0.0.0:0",
    );
    let daemon = notifyd::Daemon::start(load_config(&public, dir.path()))
        .await
        .unwrap();
    let port = match daemon.addr() {
        notifyd::Endpoint::Tcp(a) => a.port(),
        other => panic!("not TCP: {other}"),
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Valid on its own (loopback needs no token), but the API stays on 0.0.0.0 until a restart.
    let local_no_token = config_text(dir.path(), log);
    let err = daemon
        .reload(load_config(&local_no_token, dir.path()))
        .unwrap_err();
    assert!(
        err.contains("server.auth_token: 0.0.0.0:")
            && err.contains("is reachable from other hosts and no server.auth_token is set"),
        "{err}"
    );
    assert_eq!(channels_status(&http, &base, None).await, 401);
    assert_eq!(channels_status(&http, &base, Some(OLD_TOKEN)).await, 200);
    daemon.stop();
    daemon.wait().await;
}

#[tokio::test]
async fn sighup_that_would_open_the_api_is_refused_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("notifyd.toml");
    let log = "[channels.log]\nkind = \"log\"\n";
    std::fs::write(
        &config,
        with_listen(
            &config_text_with(dir.path(), &format!("auth_token = \"{OLD_TOKEN}\""), log),
            &format!("0.0.0.0:{port}"),
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The reproduction: loopback and no token in the file, then SIGHUP.
    std::fs::write(
        &config,
        with_listen(&config_text(dir.path(), log), &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    assert!(
        Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("Reload refused") {
            break text;
        }
        assert!(Instant::now() < deadline, "no refusal logged: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(logged.contains("ERROR"), "{logged}");
    assert!(
        logged.contains("is reachable from other hosts and no server.auth_token is set"),
        "{logged}"
    );
    assert!(!logged.contains(OLD_TOKEN), "the token is never logged");
    assert_eq!(channels_status(&http, &base, None).await, 401);
    assert_eq!(channels_status(&http, &base, Some(OLD_TOKEN)).await, 200);

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
