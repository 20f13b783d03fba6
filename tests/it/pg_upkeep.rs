//! The queue table's own vacuum on PostgreSQL: the daemon that leads the upkeep vacuums
//! `notifications` once dead row versions pile up, and leaves it alone when told to.

use std::time::Duration;

use notifyd::outbox::{PgOptions, PgOutbox};
use sqlx::Connection;

use crate::postgres_server::{TestSchema, server_url};

/// Rows made in `schema`'s queue, each then updated once: as many dead row versions.
const CHURNED: i64 = 12_000;

/// A daemon's outbox on `schema` (`start`: the daemon's, which runs the upkeep when `vacuum`).
async fn daemon_outbox(schema: &TestSchema, vacuum: bool) -> PgOutbox {
    PgOutbox::start(&PgOptions {
        schema: schema.name.clone(),
        max_connections: 4,
        vacuum,
        ..PgOptions::new(server_url())
    })
    .await
    .unwrap()
}

/// Finished rows, then one update of each, the dead versions a claim and a completion leave.
async fn churn(conn: &mut sqlx::PgConnection, schema: &TestSchema) {
    let s = &schema.name;
    for statement in [
        format!(
            "INSERT INTO \"{s}\".notifications (id, channel, recipient, body, priority, state,
                 created_at, run_at, updated_at, checked)
             SELECT md5(i::text), 'c', 'ops@example.com', 'b', 'normal', 'delivered',
                 1700000000000 + i, 1700000000000 + i, 1700000000000 + i, true
             FROM generate_series(1, {CHURNED}) AS i"
        ),
        format!("UPDATE \"{s}\".notifications SET updated_at = updated_at + 1"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

/// Manual vacuums of `schema`'s notifications table so far (autovacuum's are counted apart),
/// and its dead row versions.
async fn vacuums(conn: &mut sqlx::PgConnection, schema: &TestSchema) -> (i64, i64) {
    sqlx::query_as(
        "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables
         WHERE schemaname = $1 AND relname = 'notifications'",
    )
    .bind(&schema.name)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_upkeep_vacuums_the_queue_table_once_dead_versions_pile_up() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let outbox = daemon_outbox(&schema, true).await;
    let mut conn = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    churn(&mut conn, &schema).await;
    let mut seen = (0, CHURNED);
    for _ in 0..100 {
        seen = vacuums(&mut conn, &schema).await;
        if seen.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (count, dead) = seen;
    assert_eq!(count, 1, "one vacuum by the upkeep within 10 s");
    assert!(dead < CHURNED, "{dead} dead versions left");
    outbox.close().await;
}

#[tokio::test]
async fn with_vacuum_off_the_daemon_leaves_the_table_to_the_server() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let outbox = daemon_outbox(&schema, false).await;
    let mut conn = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    churn(&mut conn, &schema).await;
    // Three of the upkeep's looks (one a second) would have vacuumed by then.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(vacuums(&mut conn, &schema).await.0, 0);
    outbox.close().await;
}
