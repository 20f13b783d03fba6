//! The listener and its connections: TCP or a Unix socket, HTTP/1.1, with a header read timeout
//! so a slow-loris client cannot hold connections open, and a graceful stop that lets requests in
//! progress finish (their answers are already committed to the queue or about to be).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    /// A Unix socket, created with mode 0660 (the service's group may connect).
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `host:port` or `unix:/absolute/path`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("{text:?}: a Unix socket path must be absolute"));
            }
            return Ok(Self::Unix(path));
        }
        text.parse()
            .map(Self::Tcp)
            .map_err(|e| format!("{text:?} is not an address:port or unix:/path ({e})"))
    }

    /// Whether only this host can reach it.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(addr) => addr.ip().is_loopback(),
            Self::Unix(_) => true,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listener.
pub(crate) enum Bound {
    Tcp(TcpListener),
    /// A Unix socket and, when notifyd created it, its path (removed on stop). A socket passed by
    /// systemd belongs to systemd and is left alone.
    Unix(UnixListener, Option<PathBuf>),
}

impl Bound {
    /// Binds the endpoint. A stale Unix socket file left by a previous run is replaced.
    pub(crate) async fn bind(endpoint: &Endpoint) -> std::io::Result<Self> {
        match endpoint {
            Endpoint::Tcp(addr) => Ok(Self::Tcp(TcpListener::bind(addr).await?)),
            Endpoint::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(Self::Unix(listener, Some(path.clone())))
            }
        }
    }

    /// The listening socket systemd passed (socket activation, `notifyd.socket`), if any.
    pub(crate) fn from_systemd() -> std::io::Result<Option<Self>> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Ok(None);
        }
        if let Ok(Some(l)) = fds.take_unix_listener(0) {
            l.set_nonblocking(true)?;
            return Ok(Some(Self::Unix(UnixListener::from_std(l)?, None)));
        }
        match fds.take_tcp_listener(0)? {
            Some(l) => {
                l.set_nonblocking(true)?;
                Ok(Some(Self::Tcp(TcpListener::from_std(l)?)))
            }
            None => Ok(None),
        }
    }

    /// The endpoint actually bound (the real port when 0 was asked for).
    pub(crate) fn endpoint(&self) -> std::io::Result<Endpoint> {
        match self {
            Self::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?)),
            Self::Unix(l, path) => {
                let path = match path {
                    Some(p) => p.clone(),
                    None => l
                        .local_addr()?
                        .as_pathname()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("(systemd socket)")),
                };
                Ok(Endpoint::Unix(path))
            }
        }
    }
}

fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(_) => Ok(()),
    }
}

/// Serves `router` until `stop` turns true, then lets open requests finish (up to 10 s).
pub(crate) async fn serve(
    bound: Bound,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let accepted = tokio::select! {
            a = accept(&bound) => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok(Stream::Tcp(s)) => spawn_connection(&builder, &graceful, TokioIo::new(s), &router),
            Ok(Stream::Unix(s)) => spawn_connection(&builder, &graceful, TokioIo::new(s), &router),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Bound::Unix(_, Some(path)) = &bound {
        let _ = std::fs::remove_file(path);
    }
    drop(bound);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Some API connections did not finish within 10 s of the stop.");
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(bound: &Bound) -> std::io::Result<Stream> {
    match bound {
        Bound::Tcp(l) => l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }),
        Bound::Unix(l, _) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

fn spawn_connection<I>(
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    io: I,
    router: &Router,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router.clone());
    let connection = graceful.watch(builder.serve_connection(io, service));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "API connection ended with an error.");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_tcp_and_unix() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:8025"),
            Ok(Endpoint::Tcp("127.0.0.1:8025".parse().unwrap()))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/notifyd/api.sock"),
            Ok(Endpoint::Unix("/run/notifyd/api.sock".into()))
        );
        assert!(
            Endpoint::parse("unix:relative.sock")
                .unwrap_err()
                .contains("must be absolute")
        );
        assert!(Endpoint::parse("localhost").is_err());
    }

    #[test]
    fn only_loopback_and_unix_sockets_are_local() {
        assert!(Endpoint::parse("127.0.0.1:1").unwrap().is_local());
        assert!(Endpoint::parse("[::1]:1").unwrap().is_local());
        assert!(Endpoint::parse("unix:/x.sock").unwrap().is_local());
        assert!(!Endpoint::parse("0.0.0.0:1").unwrap().is_local());
    }
}
