//! The systemd notify protocol (`Type=notify`): one datagram per message to `$NOTIFY_SOCKET`.
//!
//! `READY=1` once the queue is migrated and the listener bound; `STATUS=` with the queue depth;
//! `WATCHDOG=1` from the dispatcher's own sweep (which goes through the queue writer), so a
//! wedged dispatcher or writer stops the pings and systemd restarts the service; `STOPPING=1`
//! when the drain starts. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where to send notifications, and how often the watchdog wants a ping.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    socket: Option<PathBuf>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From systemd's environment: `NOTIFY_SOCKET`, `WATCHDOG_USEC` (and `WATCHDOG_PID`, which
    /// must be this process when set).
    pub(crate) fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Self::new(socket, watchdog)
    }

    /// An explicit socket and watchdog interval (tests).
    pub(crate) fn new(socket: Option<PathBuf>, watchdog: Option<Duration>) -> Self {
        Self { socket, watchdog }
    }

    /// Whether messages go anywhere (`$NOTIFY_SOCKET` is set): when not, a status line need not
    /// be worked out.
    pub(crate) fn listening(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval systemd asked for, if any.
    pub(crate) fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`KEY=value` lines). Failures are logged, never fatal: losing a status
    /// line must not stop deliveries.
    pub(crate) fn notify(&self, message: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send(path, message) {
            tracing::warn!(error = %e, "Could not notify systemd.");
        }
    }

    /// `READY=1` with a status line.
    pub(crate) fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `WATCHDOG=1` with a status line.
    pub(crate) fn alive(&self, status: &str) {
        if self.watchdog.is_some() {
            self.notify(&format!("WATCHDOG=1\nSTATUS={status}"));
        } else {
            self.notify(&format!("STATUS={status}"));
        }
    }

    /// `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=Draining in-flight sends");
    }
}

fn send(path: &std::path::Path, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let text = path.to_string_lossy();
    if let Some(name) = text.strip_prefix('@') {
        // An abstract socket (Linux): the name after '@'.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path), Some(Duration::from_secs(10)));
        n.ready("Ready");
        n.alive("queued 3");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=Ready");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\nSTATUS=queued 3");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let n = Notifier::new(None, None);
        assert!(!n.listening());
        n.ready("x");
    }

    #[test]
    fn without_a_watchdog_alive_sends_only_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::new(Some(path), None).alive("queued 0");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=queued 0");
    }
}
