//! The limits that belong to a provider account, kept by every daemon on one PostgreSQL queue:
//! the channel's rate limit over all of them, and a provider's `Retry-After` holding the
//! channel on all of them. The store's side first (the reservation statement is the GCRA rule),
//! then three daemons against one HTTP receiver.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use notifyd::HoldReason;
use notifyd::outbox::{Bucket, Reserved, SharedHold};
use notifyd::outbox::{ManualClock, Outbox, Retention};
use notifyd::rate_limit::{self, Pace};
use sqlx::Connection;

use crate::chaos::{accept_many, all_delivered, channel_view};
use crate::postgres_server::{TestSchema, server_url};
use crate::scale_out::{outbox_on, start_polling_every};
use crate::support::*;

const START_MS: i64 = 1_800_000_000_000;

/// 20 per second, bursts of 5.
const PACE: Pace = Pace {
    interval_us: 50_000,
    tolerance_us: 200_000,
};

#[tokio::test]
async fn the_shared_bucket_grants_what_the_gcra_rule_grants() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(START_MS);
    let outbox = outbox_on(&schema, &clock).await;
    let limits = outbox.cluster_limits().unwrap();
    let mut tat = None;
    // (ms since the last step, tokens wanted, horizon in ms)
    let steps = [
        (0, 10, 0),
        (0, 10, 0),
        (0, 10, 100),
        (100, 3, 0),
        (30, 4, 1_000),
        (5_000, 2, 0),
        (0, 1, 0),
    ];
    for (i, (advance, want, within)) in steps.into_iter().enumerate() {
        clock.advance(Duration::from_millis(advance));
        let now_us = clock.now_ms() * 1000;
        let within = Duration::from_millis(within);
        let got = limits
            .reserve(Bucket::Channel(&"sms".into()), PACE, want, within)
            .await
            .unwrap();
        let g = rate_limit::reserve(tat, now_us, want, within.as_micros() as i64, PACE);
        tat = Some(g.tat_us);
        let expected = Reserved {
            due_in: rate_limit::schedule(g, now_us, PACE),
            tat_in: rate_limit::ahead_of(g.tat_us, now_us),
        };
        assert_eq!(got, expected, "step {i}");
    }
    // A recipient's bucket is its own: full.
    let recipient = Bucket::Recipient {
        channel: &"sms".into(),
        recipient: "+15550001",
    };
    let got = limits.reserve(recipient, PACE, 9, Duration::ZERO).await;
    assert_eq!(got.unwrap().due_in, vec![Duration::ZERO; 5]);
    outbox.close().await;
}

#[tokio::test]
async fn daemons_reserving_at_the_same_time_never_get_the_same_token() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(START_MS);
    let a = outbox_on(&schema, &clock).await;
    let b = outbox_on(&schema, &clock).await;
    let mut reservations = Vec::new();
    for i in 0..40 {
        let limits = if i % 2 == 0 { &a } else { &b }.cluster_limits().unwrap();
        reservations.push(tokio::spawn(async move {
            limits
                .reserve(
                    Bucket::Channel(&"sms".into()),
                    PACE,
                    3,
                    Duration::from_secs(60),
                )
                .await
                .unwrap()
        }));
    }
    let mut due = Vec::new();
    for r in reservations {
        due.extend(r.await.unwrap().due_in);
    }
    due.sort_unstable();
    // The clock stood still: a burst of 5 at once, then one every 50 ms, none twice.
    assert_eq!(due.len(), 120);
    assert_eq!(due[..5], [Duration::ZERO; 5]);
    for (k, d) in due.iter().enumerate().skip(5) {
        assert_eq!(*d, Duration::from_millis(50 * (k as u64 - 4)), "token {k}");
    }
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_hold_one_daemon_shares_is_seen_by_another_until_it_ends() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(START_MS);
    let a = outbox_on(&schema, &clock).await;
    let b = outbox_on(&schema, &clock).await;
    let (on_a, on_b) = (a.cluster_limits().unwrap(), b.cluster_limits().unwrap());
    let until = START_MS + 30_000;
    on_a.hold(&"sms".into(), until, HoldReason::RetryAfter)
        .await
        .unwrap();
    // A shorter hold does not shorten it.
    on_b.hold(&"sms".into(), START_MS + 5_000, HoldReason::ChannelFault)
        .await
        .unwrap();
    let held = SharedHold {
        channel: "sms".into(),
        until_ms: until,
        because: HoldReason::RetryAfter,
    };
    assert_eq!(on_b.holds().await.unwrap(), vec![held]);
    clock.advance(Duration::from_secs(30));
    assert_eq!(on_b.holds().await.unwrap(), vec![]);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn the_sweep_forgets_full_buckets_and_ended_holds() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let clock = ManualClock::starting_at(START_MS);
    let outbox = outbox_on(&schema, &clock).await;
    let limits = outbox.cluster_limits().unwrap();
    for recipient in ["+15550001", "+15550002"] {
        let bucket = Bucket::Recipient {
            channel: &"sms".into(),
            recipient,
        };
        limits
            .reserve(bucket, PACE, 1, Duration::ZERO)
            .await
            .unwrap();
    }
    limits
        .hold(&"sms".into(), START_MS + 1_000, HoldReason::ChannelFault)
        .await
        .unwrap();
    let rows = || async {
        let mut conn = sqlx::PgConnection::connect(&server_url()).await.unwrap();
        let count = |table: &str| format!("SELECT count(*) FROM \"{}\".{table}", schema.name);
        let buckets: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("rate_limits")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let holds: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("channel_holds")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (buckets, holds)
    };
    let retention = Retention {
        finished_ms: 86_400_000,
        unmatched_receipts_ms: 86_400_000,
    };
    outbox.sweep(&["sms".into()], &retention).await.unwrap();
    assert_eq!(rows().await, (2, 1), "in use: kept");
    // One interval on, both buckets are full again and the hold is over.
    clock.advance(Duration::from_millis(1_050));
    outbox.sweep(&["sms".into()], &retention).await.unwrap();
    assert_eq!(rows().await, (0, 0));
    outbox.close().await;
}

/// A rate-limited webhook channel `hooks` to `sink`.
fn limited_hooks(sink: &Sink) -> String {
    webhook(
        "hooks",
        &sink.url(),
        "concurrency = 4\nrate_limit = { per_second = 20, burst = 5 }",
    )
}

#[tokio::test]
async fn three_daemons_on_one_queue_keep_the_channels_rate_limit_together() {
    const RATE: f64 = 20.0;
    const BURST: f64 = 5.0;
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let sink = Sink::ok().await;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(start_polling_every(&schema, "50ms", &limited_hooks(&sink)).await);
    }
    let mut ids = Vec::new();
    for d in &daemons {
        ids.extend(accept_many(d, "hooks", 70).await);
    }
    all_delivered(&daemons[0], &ids, Duration::from_secs(60)).await;

    let mut times: Vec<Instant> = sink.received().iter().map(|r| r.at).collect();
    times.sort_unstable();
    assert_eq!(times.len(), 210, "each notification once");
    // As for one daemon (chaos.rs): burst + rate × span in every window, over all three.
    let worst = assert_rate_kept(&times, RATE, BURST);
    let (mut delivered, mut reservations) = (Vec::new(), 0);
    for d in &daemons {
        let view = channel_view(d, "hooks").await;
        assert_eq!(view["rate_limit"]["shared"], true);
        delivered.push(view["since_start"]["delivered"].as_u64().unwrap());
        reservations += view["rate_limit"]["reservations"].as_u64().unwrap();
    }
    assert_eq!(delivered.iter().sum::<u64>(), 210);
    assert!(
        delivered.iter().all(|n| *n > 0),
        "every daemon sent some: {delivered:?}"
    );
    // Tokens are reserved a few at a time: fewer statements than sends.
    assert!(
        reservations < 210,
        "{reservations} reservations for 210 sends"
    );
    eprintln!(
        "cluster rate limit: 210 delivered by {delivered:?} in {:?} with {reservations} reservations; worst window {} requests, {:.2} over burst + rate x span",
        times[209] - times[0],
        worst.0,
        worst.1
    );
    for d in daemons {
        d.stop().await;
    }
}

#[tokio::test]
async fn a_retry_after_one_daemon_meets_holds_the_channel_on_every_daemon() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    // The first request is answered 429 with Retry-After: 2; every other one 200.
    let sink = Sink::start(|n, _| {
        if n == 0 {
            let after = vec![("retry-after", "2".to_owned())];
            (StatusCode::TOO_MANY_REQUESTS, after, Duration::ZERO)
        } else {
            (StatusCode::OK, vec![], Duration::ZERO)
        }
    })
    .await;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(start_polling_every(&schema, "50ms", &limited_hooks(&sink)).await);
    }
    let mut ids = Vec::new();
    for d in &daemons {
        ids.extend(accept_many(d, "hooks", 30).await);
    }
    all_delivered(&daemons[0], &ids, Duration::from_secs(60)).await;

    let got = sink.received();
    assert_eq!(got.len(), 91, "90 delivered after one 429");
    let limited_at = got[0].at;
    // Sends already on their way when the 429 came may still arrive; the other daemons read the
    // hold within their 50 ms poll interval. After that, nothing until the 2 s are over.
    let during: Vec<Duration> = got
        .iter()
        .map(|r| r.at.saturating_duration_since(limited_at))
        .filter(|d| *d >= Duration::from_millis(300) && *d < Duration::from_secs(2))
        .collect();
    assert!(
        during.is_empty(),
        "{} requests during the hold, at {during:?} after the 429",
        during.len()
    );
    assert!(
        got.iter()
            .any(|r| r.at >= limited_at + Duration::from_secs(2)),
        "the channel went on after the hold"
    );
    for d in daemons {
        d.stop().await;
    }
}
