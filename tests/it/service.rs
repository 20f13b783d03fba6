//! Running under systemd: the notify protocol as the real binary speaks it.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("no notification from the daemon in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn it_says_ready_pings_the_watchdog_with_a_status_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = dir.path().join("notifyd.toml");
    // Sweeps every 30 s unless the watchdog asks for more: pings inside the 10 s receive timeout
    // prove the interval follows WATCHDOG_USEC.
    let text = config_text(dir.path(), "[channels.log]\nkind = \"log\"\n")
        .replace("sweep_interval = \"200ms\"", "sweep_interval = \"30s\"");
    std::fs::write(&config, text).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "600000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = recv(&sock);
    assert!(
        ready.starts_with("READY=1\nSTATUS=Listening on 127.0.0.1:"),
        "{ready}"
    );

    let mut pings = 0;
    while pings < 3 {
        let msg = recv(&sock);
        assert!(msg.starts_with("WATCHDOG=1\nSTATUS=Delivering: "), "{msg}");
        assert!(msg.ends_with(" queued, 0 sending, 0 dead"), "{msg}");
        pings += 1;
    }

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        let msg = recv(&sock);
        if msg.starts_with("STOPPING=1") {
            break;
        }
        assert!(msg.starts_with("WATCHDOG=1"), "{msg}");
    }
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Sends raw bytes; returns what came back and whether the server closed the connection (as
/// opposed to our 10 s guard giving up).
async fn raw_exchange(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    request: &str,
) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

async fn raw_request(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    request: &str,
) -> String {
    raw_exchange(stream, request).await.0
}

#[tokio::test]
async fn the_api_can_listen_on_a_unix_socket_with_mode_0660() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let text = config_text(dir.path(), "[channels.log]\nkind = \"log\"\n").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"unix:{}\"", sock.display()),
    );
    let daemon = notifyd::Daemon::start(load_config(&text, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        daemon.addr().to_string(),
        format!("unix:{}", sock.display())
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let answer = raw_request(
        &mut stream,
        "GET /healthz HTTP/1.1\r\nHost: notifyd\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    daemon.stop();
    daemon.wait().await;
    assert!(!sock.exists(), "the socket file is removed on stop");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let d = TestDaemon::start_with(
        "header_timeout = \"300ms\"",
        "[channels.log]\nkind = \"log\"\n",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(d.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (answer, closed) = raw_exchange(
        &mut stream,
        "POST /v1/notifications HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    assert!(closed, "the server kept a half-sent request open");
    // hyper answers 408 or just closes.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408() {
    let d = TestDaemon::start_with(
        "body_timeout = \"300ms\"",
        "[channels.log]\nkind = \"log\"\n",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(d.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let answer = raw_request(
        &mut stream,
        "POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"channel\"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn it_serves_a_socket_passed_by_systemd_and_leaves_it_in_place() {
    // systemd-socket-activate (from systemd) listens, then execs notifyd on the first connection
    // with the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID set: what notifyd.socket does.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let config = dir.path().join("notifyd.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "[channels.log]\nkind = \"log\"\n"),
    )
    .unwrap();
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate comes with systemd (systemd/check.sh installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the activator never created its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let answer = raw_request(
        &mut stream,
        "GET /healthz HTTP/1.1\r\nHost: notifyd\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // The exec'd activator is notifyd now: stop it like systemd would.
    Command::new("kill")
        .arg("-TERM")
        .arg(activator.id().to_string())
        .status()
        .unwrap();
    assert!(activator.wait().unwrap().success());
    assert!(
        sock.exists(),
        "a socket owned by systemd is not notifyd's to remove"
    );
}
