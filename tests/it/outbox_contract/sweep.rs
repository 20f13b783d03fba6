//! The maintenance sweep: expiry, rows of unknown channels, retention; and the oldest-due gauge.

use std::time::Duration;

use notifyd::outbox::{
    ChannelName, ExpiredRow, InboundReceipt, NewNotification, ReceiptStatus, Retention, State,
};

use super::{LEASE, Subject, delivered, finish};

const DAY_MS: i64 = 86_400_000;
const KEEP_A_DAY: Retention = Retention {
    finished_ms: DAY_MS,
    unmatched_receipts_ms: DAY_MS,
};

fn known(channels: &[&str]) -> Vec<ChannelName> {
    channels.iter().map(|c| ChannelName::from(*c)).collect()
}

pub async fn the_sweep_expires_queued_notifications_whose_expiry_passed(s: Subject) {
    let expiring = |at| NewNotification {
        expires_at_ms: Some(at),
        ..s.note("c")
    };
    let soon = s.put(expiring(s.now() + 10_000)).await;
    let later = s.put(expiring(s.now() + 60_000)).await;
    let leased = s
        .put(NewNotification {
            run_at_ms: s.now() - 1,
            ..expiring(s.now() + 10_000)
        })
        .await;
    let row = s.claim("c", 1).await.remove(0);
    assert_eq!(row.message.id, leased);

    s.clock.advance(Duration::from_secs(10));
    let report = s.outbox.sweep(&known(&["c"]), &KEEP_A_DAY).await.unwrap();
    assert_eq!(
        report.expired,
        vec![ExpiredRow {
            id: soon.clone(),
            channel: "c".into()
        }]
    );
    let view = s.outbox.get(&soon).await.unwrap().unwrap();
    assert_eq!(view.state, State::Expired);
    assert_eq!(view.last_code.as_deref(), Some("expired"));
    assert_eq!(s.state(&later).await, State::Queued);
    // A leased row is its sender's to expire.
    assert_eq!(s.state(&leased).await, State::Sending);
}

pub async fn the_sweep_dead_letters_an_unknown_channel_but_not_its_live_leases(s: Subject) {
    let queued = s.put(s.note("gone")).await;
    let leased = s
        .put(NewNotification {
            run_at_ms: s.now() - 1,
            ..s.note("gone")
        })
        .await;
    assert_eq!(s.claim("gone", 1).await.remove(0).message.id, leased);
    let kept = s.put(s.note("c")).await;

    let report = s.outbox.sweep(&known(&["c"]), &KEEP_A_DAY).await.unwrap();
    assert_eq!(report.orphaned, 1);
    let view = s.outbox.get(&queued).await.unwrap().unwrap();
    assert_eq!(view.state, State::Dead);
    assert_eq!(view.last_code.as_deref(), Some("unknown_channel"));
    assert_eq!(s.state(&leased).await, State::Sending);
    assert_eq!(s.state(&kept).await, State::Queued);

    s.clock.advance(LEASE);
    let report = s.outbox.sweep(&known(&["c"]), &KEEP_A_DAY).await.unwrap();
    assert_eq!(report.orphaned, 1);
    assert_eq!(s.state(&leased).await, State::Dead);
}

pub async fn retention_purges_old_finished_notifications_and_keeps_dead_and_live_ones(s: Subject) {
    let old = s.put(s.note("c")).await;
    let row = s.claim_only("c", &old).await;
    s.complete(&row, delivered("P-1")).await;
    let dead = s.put(s.note("c")).await;
    let row = s.claim_only("c", &dead).await;
    s.complete(&row, finish(State::Dead, false)).await;
    let cancelled = s.put(s.note("c")).await;
    s.outbox.cancel(&cancelled).await.unwrap();
    let scheduled = s
        .put(NewNotification {
            run_at_ms: s.now() + 3 * DAY_MS,
            ..s.note("c")
        })
        .await;

    s.clock.advance(Duration::from_millis(DAY_MS as u64));
    let young = s.put(s.note("c")).await;
    let row = s.claim_only("c", &young).await;
    s.complete(&row, delivered("P-2")).await;
    s.clock.advance(Duration::from_millis(1));

    let report = s.outbox.sweep(&known(&["c"]), &KEEP_A_DAY).await.unwrap();
    assert_eq!(report.purged, 2);
    assert!(s.outbox.get(&old).await.unwrap().is_none());
    assert!(s.outbox.get(&cancelled).await.unwrap().is_none());
    assert_eq!(s.state(&dead).await, State::Dead);
    assert_eq!(s.state(&scheduled).await, State::Queued);
    assert_eq!(s.state(&young).await, State::Delivered);
}

pub async fn retention_purges_unmatched_receipts_once_old(s: Subject) {
    let unmatched = InboundReceipt {
        channel: "sms".into(),
        provider_id: "NOBODY".into(),
        status: ReceiptStatus::Delivered,
        provider_status: "delivered".into(),
        error_code: None,
    };
    s.outbox.record_receipt(unmatched.clone()).await.unwrap();
    let report = s.outbox.sweep(&known(&["sms"]), &KEEP_A_DAY).await.unwrap();
    assert_eq!(report.receipts_purged, 0);

    s.clock.advance(Duration::from_millis(DAY_MS as u64 + 1));
    let report = s.outbox.sweep(&known(&["sms"]), &KEEP_A_DAY).await.unwrap();
    assert_eq!(report.receipts_purged, 1);
    // Gone: the same receipt is new again.
    assert!(!s.outbox.record_receipt(unmatched).await.unwrap().duplicate);
}

pub async fn the_oldest_due_time_ignores_scheduled_notifications(s: Subject) {
    let now = s.now();
    s.put(NewNotification {
        run_at_ms: now - 5_000,
        priority: notifyd::outbox::Priority::Low,
        ..s.note("a")
    })
    .await;
    s.put(NewNotification {
        run_at_ms: now - 1_000,
        priority: notifyd::outbox::Priority::High,
        ..s.note("a")
    })
    .await;
    s.put(NewNotification {
        run_at_ms: now + 60_000,
        ..s.note("b")
    })
    .await;
    let oldest = s.outbox.oldest_due(&known(&["a", "b", "c"])).await.unwrap();
    assert_eq!(oldest, vec![("a".into(), now - 5_000)]);
}
