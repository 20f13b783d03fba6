//! The machine's PostgreSQL for the tests (`NOTIFYD_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`): a fresh schema per test, dropped after it.
//!
//! Without a server, a developer's run says so and skips; under CI (`CI=true`) it fails.
//! [`OwnServer`] is a server of a test's own, for tests that stop and start it.

use sqlx::Connection;

/// The server the PostgreSQL tests use.
pub fn server_url() -> String {
    std::env::var("NOTIFYD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether a test without its PostgreSQL may skip: only outside CI.
fn may_skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL is required under CI: {why}");
    }
    eprintln!("SKIPPED: no PostgreSQL at {} ({why})", server_url());
    true
}

/// A schema of its own for one test, dropped (with everything in it) when the test ends.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    /// The `[queue]` keys of a daemon on this schema.
    pub fn queue_keys(&self) -> String {
        format!(
            "url = \"{}\"\nschema = \"{}\"\nmax_connections = 8",
            server_url(),
            self.name
        )
    }

    /// A fresh name; `None` (after saying why) when there is no server and skipping is allowed.
    pub async fn create() -> Option<Self> {
        match sqlx::PgConnection::connect(&server_url()).await {
            Ok(conn) => {
                drop(conn.close().await);
                Some(Self {
                    name: format!("t_{}", uuid::Uuid::new_v4().simple()),
                })
            }
            Err(e) => {
                may_skip(&e.to_string());
                None
            }
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        // Its own thread and runtime: Drop cannot await, and the test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&server_url()).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

/// A PostgreSQL server of a test's own, on a free port, with its data in a temp dir: one the test
/// may stop and start (never the machine's server). `initdb` and `pg_ctl` come from the
/// installed packages (`/usr/lib/postgresql/<version>/bin`) and run as the `postgres` user when
/// the test runs as root, since they refuse root.
pub struct OwnServer {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    pub port: u16,
    /// Holds the data and socket directories; removed after the server stopped.
    dir: tempfile::TempDir,
}

impl OwnServer {
    /// Creates a cluster and starts it; `None` (after saying why) when PostgreSQL's programs are
    /// not installed and skipping is allowed.
    pub fn start() -> Option<Self> {
        let Some(bin) = newest_bin_dir() else {
            may_skip("no /usr/lib/postgresql/<version>/bin with initdb and pg_ctl");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of {} failed", dir.path().display());
        }
        let port = free_port();
        let server = Self {
            bin,
            data,
            port,
            dir,
        };
        server.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ],
            true,
        );
        server.start_again();
        Some(server)
    }

    /// `postgres://…` for the `postgres` database of this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast: open sessions are ended, their transactions rolled back).
    pub fn stop(&self) {
        self.run("pg_ctl", &["stop", "-m", "fast", "-w", "-D"], true);
    }

    /// Starts the stopped server again on the same port and data, waiting until it accepts
    /// connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_str().unwrap().to_owned();
        self.run(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-l", &log, "-o", &options, "-D"],
            true,
        );
    }

    /// Runs one of PostgreSQL's programs with `args` followed by the data directory.
    fn run(&self, program: &str, args: &[&str], must_succeed: bool) {
        let path = self.bin.join(program);
        let mut command = if as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        };
        let out = command
            .args(args)
            .arg(&self.data)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success() || !must_succeed,
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.run("pg_ctl", &["stop", "-m", "immediate", "-D"], false);
    }
}

/// The bin directory of the newest installed PostgreSQL that has `initdb` and `pg_ctl`.
fn newest_bin_dir() -> Option<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (PostgreSQL's programs then run as `postgres`).
fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
