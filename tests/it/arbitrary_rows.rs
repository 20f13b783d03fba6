//! Keeps hunting: rows of arbitrary values — any bytes as text, any integer, any JSON, and on a
//! table that lost its STRICT typing any storage class — inserted with plain SQL into the queue
//! of a running daemon. Every row must end in a final state with a reason, and a well-formed row
//! queued behind them on the same channel must be delivered.
//!
//! The generator is seeded: a failure prints its seed, and `NOTIFYD_HUNT_SEED=<n>` runs that
//! seed instead of the fixed ones (`NOTIFYD_HUNT_ROWS` changes how many rows each seed writes).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::types::Value as Sql;

use crate::support::*;

/// One column's value: the SQL expression it is written with, and the value bound to it.
struct Cell {
    expr: &'static str,
    value: Sql,
}

impl Cell {
    fn of(value: Sql) -> Self {
        Self { expr: "?", value }
    }

    /// Text holding exactly these bytes, UTF-8 or not.
    fn bytes_as_text(bytes: Vec<u8>) -> Self {
        Self {
            expr: "CAST(? AS TEXT)",
            value: Sql::Blob(bytes),
        }
    }
}

impl Cell {
    /// This cell unless it is NULL, else `other`.
    fn or(self, other: Cell) -> Cell {
        if matches!(self.value, Sql::Null) {
            other
        } else {
            self
        }
    }
}

fn text(s: impl Into<String>) -> Cell {
    Cell::of(Sql::Text(s.into()))
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

/// Text the way integrators get it wrong: empty, blank, not UTF-8, long, control characters.
fn any_text(rng: &mut StdRng) -> Cell {
    match rng.random_range(0..9) {
        0 => Cell::of(Sql::Null),
        1 => text(""),
        2 => text(" \t\n"),
        3 => Cell::bytes_as_text(random_bytes(rng, 12)),
        4 => text("x".repeat(rng.random_range(8_000..120_000))),
        5 => text("ünïcødé ✓ \u{0} \u{FEFF} 🙂"),
        6 => text(format!("+1555{:07}", rng.random_range(0..10_000_000))),
        _ => text(format!("ops{}@example.com", rng.random::<u16>())),
    }
}

/// Integers at and around every bound the daemon might have.
fn any_int(rng: &mut StdRng) -> Cell {
    const EDGES: [i64; 10] = [
        i64::MIN,
        -1,
        0,
        1,
        2,
        4_294_967_294,
        4_294_967_295,
        4_294_967_296,
        253_402_300_799_999,
        i64::MAX,
    ];
    Cell::of(Sql::Integer(match rng.random_range(0..3) {
        0 => EDGES[rng.random_range(0..EDGES.len())],
        1 => rng.random(),
        _ => rng.random_range(0..10),
    }))
}

/// A fallback route list, well-formed or not.
fn routes(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..12);
    let route = |i: usize, rng: &mut StdRng| match rng.random_range(0..6) {
        0 => format!(r#"{{"channel": "hooks", "to": "r{i}", "content": {{"body": 5}}}}"#),
        1 => format!(r#"{{"channel": "nowhere", "to": "r{i}"}}"#),
        2 => format!(r#"{{"channel": "hooks", "to": "r{i}", "content": {{"subject": "s"}}}}"#),
        3 => r#"{"channel": "hooks"}"#.to_owned(),
        _ => format!(r#"{{"channel": "hooks", "to": "r{i}"}}"#),
    };
    let list: Vec<String> = (0..n).map(|i| route(i, rng)).collect();
    format!("[{}]", list.join(","))
}

/// JSON text of every shape, some SQLite accepts and the daemon cannot read, and (the
/// inserting connection ignores CHECKs) some that is not JSON at all.
fn any_json(rng: &mut StdRng) -> Cell {
    let depth = rng.random_range(100..400);
    match rng.random_range(0..14) {
        0 | 1 => Cell::of(Sql::Null),
        2 => text("{}"),
        3 => text(r#"{"a": 1}"#),
        4 => text("[]"),
        5 => text(r#"["hooks", "log"]"#),
        6 => text("1e400"),
        7 => text(format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        8 => text("{bad"),
        9 => text(r#""just a string""#),
        10 => text("18446744073709551616"),
        _ => text(routes(rng)),
    }
}

/// Any storage class at all, for a table without STRICT typing.
fn any_class(rng: &mut StdRng) -> Cell {
    match rng.random_range(0..5) {
        0 => Cell::of(Sql::Null),
        1 => Cell::of(Sql::Integer(rng.random())),
        2 => Cell::of(Sql::Real(rng.random_range(-1e20..1e20))),
        3 => Cell::of(Sql::Blob(random_bytes(rng, 16))),
        _ => text(format!("t{}", rng.random::<u32>())),
    }
}

/// The columns a row is written with. `channel` and `run_at` stay what routes the row to the
/// channel under test, due now; `state` is one the claim takes. Everything else is arbitrary.
fn arbitrary_row(rng: &mut StdRng, loose: bool, now: i64) -> Vec<(&'static str, Cell)> {
    let mut row = vec![
        ("channel", text("hooks")),
        (
            "run_at",
            Cell::of(Sql::Integer(rng.random_range(now - 3_600_000..now - 1_000))),
        ),
        (
            "state",
            text(if rng.random_bool(0.8) {
                "queued"
            } else {
                "sending"
            }),
        ),
    ];
    // NOT NULL: SQLite refuses a row without one, so each row has one, of any content.
    let recipient = match any_text(rng) {
        Cell {
            value: Sql::Null, ..
        } => text(""),
        cell if loose && rng.random_bool(0.3) => any_class(rng).or(cell),
        cell => cell,
    };
    row.push(("recipient", recipient));
    let mut maybe = |name: &'static str, make: fn(&mut StdRng) -> Cell, rng: &mut StdRng| {
        if rng.random_bool(0.3) {
            let cell = if loose && rng.random_bool(0.3) {
                any_class(rng)
            } else {
                make(rng)
            };
            row.push((name, cell));
        }
    };
    maybe("id", |rng| Cell::bytes_as_text(random_bytes(rng, 8)), rng);
    maybe("subject", any_text, rng);
    maybe("body", any_text, rng);
    maybe("html", any_text, rng);
    maybe("data", any_json, rng);
    maybe(
        "priority",
        |rng| text(["high", "normal", "low", "urgent"][rng.random_range(0..4)]),
        rng,
    );
    maybe("attempts", any_int, rng);
    maybe("created_at", any_int, rng);
    maybe("expires_at", any_int, rng);
    maybe("tried", any_json, rng);
    maybe("fallback", any_json, rng);
    maybe("checked", any_int, rng);
    maybe("idempotency_key", any_text, rng);
    maybe("lease_owner", any_text, rng);
    maybe("lease", any_int, rng);
    maybe("deliver_between", any_json, rng);
    maybe("source", any_json, rng);
    maybe("digest_key", any_text, rng);
    row
}

/// Writes `rows` arbitrary rows as a careless program would (CHECKs off); returns how many
/// SQLite took (it refuses a NULL recipient, a repeated id, a STRICT type mismatch).
fn insert_arbitrary(
    conn: &rusqlite::Connection,
    rng: &mut StdRng,
    rows: usize,
    loose: bool,
) -> usize {
    let now = notifyd::now_ms();
    let mut taken = 0;
    for _ in 0..rows {
        let row = arbitrary_row(rng, loose, now);
        let names: Vec<&str> = row.iter().map(|(n, _)| *n).collect();
        let exprs: Vec<&str> = row.iter().map(|(_, c)| c.expr).collect();
        let sql = format!(
            "INSERT INTO notifications ({}) VALUES ({})",
            names.join(", "),
            exprs.join(", ")
        );
        let values = row.into_iter().map(|(_, c)| c.value);
        match conn.execute(&sql, rusqlite::params_from_iter(values)) {
            Ok(_) => taken += 1,
            Err(e) if std::env::var("NOTIFYD_HUNT_VERBOSE").is_ok() => eprintln!("refused: {e}"),
            Err(_) => {}
        }
    }
    taken
}

/// Drops STRICT from the table under the running daemon (its connections see the schema
/// change and re-prepare): every column may then hold any storage class.
fn loosen(conn: &rusqlite::Connection) {
    conn.execute_batch("PRAGMA writable_schema = ON").unwrap();
    let changed = conn
        .execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ') STRICT', ')')
             WHERE name = 'notifications' AND sql LIKE '%) STRICT'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA schema_version = {}; PRAGMA writable_schema = OFF",
        version + 1
    ))
    .unwrap();
}

/// Rows not in a final state, or in a failed one without a code and a message.
const UNFINISHED: &str = "SELECT rowid, quote(state), quote(last_code), quote(last_error)
     FROM notifications
     WHERE state IN ('queued', 'sending')
        OR (state <> 'delivered' AND (last_code IS NULL OR last_error IS NULL))";

async fn hunt(seed: u64, rows: usize, loose: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Every other request is refused for good, so failures and fallback routes are walked too.
    let sink = Sink::start(|n, body| {
        let status = if n % 2 == 0 || body["id"] == "well-formed" {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        (status, vec![], Duration::ZERO)
    })
    .await;
    let d = TestDaemon::start(&webhook("hooks", &sink.url(), "")).await;
    let conn = rusqlite::Connection::open(d.queue_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    if loose {
        loosen(&conn);
    }
    conn.execute_batch("PRAGMA ignore_check_constraints = ON")
        .unwrap();
    let taken = insert_arbitrary(&conn, &mut rng, rows, loose);
    assert!(
        taken > rows / 2,
        "seed {seed}: SQLite took only {taken} of {rows} rows"
    );
    conn.execute(
        "INSERT INTO notifications (id, channel, recipient, body) VALUES ('well-formed', 'hooks', 'ops', 'behind them')",
        [],
    )
    .unwrap();

    let view = d.wait_for_state("well-formed", "delivered").await;
    assert_eq!(view["state"], "delivered", "seed {seed}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let unfinished: Vec<String> = conn
            .prepare(UNFINISHED)
            .unwrap()
            .query_map([], |r| {
                Ok(format!(
                    "rowid {}: {} {} {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if unfinished.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed} (loose: {loose}): rows without a final state and a reason: {unfinished:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fates: Vec<String> = conn
        .prepare(
            "SELECT state || ' ' || coalesce(last_code, '-') || ' ' || field || ' ' || count(*)
             FROM (SELECT state, last_code,
                          coalesce(substr(last_error, 1, instr(last_error, ':') - 1), '') AS field
                   FROM notifications)
             GROUP BY state, last_code, field ORDER BY count(*) DESC",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    eprintln!("seed {seed} (loose: {loose}): {taken} rows taken; {fates:?}");
    // The views show every row they hold, readable or not.
    for path in ["/v1/dead-letters?limit=1000", "/v1/channels", "/metrics"] {
        let status = d
            .http
            .get(d.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 200, "seed {seed}: {path}");
    }
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM notifications WHERE id GLOB '[0-9a-f]*' AND length(id) = 32")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for id in ids {
        let (status, _) = d.get(&format!("/v1/notifications/{id}")).await;
        assert_eq!(status, 200, "seed {seed}: GET {id}");
    }
}

/// The seeds to run: `NOTIFYD_HUNT_SEED`, or a fixed few.
fn seeds() -> Vec<u64> {
    match std::env::var("NOTIFYD_HUNT_SEED") {
        Ok(s) => vec![s.parse().expect("NOTIFYD_HUNT_SEED is a number")],
        Err(_) => vec![1, 2],
    }
}

fn rows() -> usize {
    std::env::var("NOTIFYD_HUNT_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_rows_all_end_with_a_reason_and_the_channel_delivers_behind_them() {
    for seed in seeds() {
        hunt(seed, rows(), false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_storage_classes_all_end_with_a_reason_and_the_channel_delivers_behind_them() {
    for seed in seeds() {
        hunt(seed, rows(), true).await;
    }
}
