//! The machine's PostgreSQL for the tests (`NOTIFYD_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`): a fresh schema per test, dropped after it.
//!
//! Without a server, a developer's run says so and skips; under CI (`CI=true`) it fails.

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
