//! A queue of a test's own on the machine's PostgreSQL (`NOTIFYD_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`): a fresh schema, dropped when the test ends.
//! Without a server a developer's run says so and skips; under CI (`CI=true`) it fails.

use super::{PgOptions, PgOutbox};

/// The server the module's tests use.
pub(super) fn server_url() -> String {
    std::env::var("NOTIFYD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// An outbox on a schema of its own, dropped (with everything in it) on drop.
pub(super) struct TestQueue {
    pub outbox: PgOutbox,
    schema: String,
}

impl TestQueue {
    /// A migrated queue; `None` (after saying why) when there is no server and skipping is
    /// allowed.
    pub(super) async fn open() -> Option<Self> {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        match PgOutbox::connect(&PgOptions {
            schema: schema.clone(),
            ..PgOptions::new(server_url())
        })
        .await
        {
            Ok(outbox) => Some(Self { outbox, schema }),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("PostgreSQL is required under CI: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: no PostgreSQL at {} ({e})", server_url());
                None
            }
        }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Its own thread and runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection as _;
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
