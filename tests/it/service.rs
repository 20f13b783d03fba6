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
