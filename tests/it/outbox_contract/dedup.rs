//! Dedup keys: one holder per (channel, recipient, key) inside its window; the rest are merged
//! into it and counted.

use std::time::Duration;

use notifyd::outbox::{DedupClaim, Enqueued, NewNotification, State};

use super::Subject;

/// A notification of `channel` to `to` holding `key` for `window_ms` from now.
fn keyed(s: &Subject, channel: &str, to: &str, key: &str, window_ms: i64) -> NewNotification {
    NewNotification {
        to: to.into(),
        dedup: Some(DedupClaim {
            key: key.into(),
            until_ms: s.now() + window_ms,
        }),
        ..s.note(channel)
    }
}

pub async fn a_second_notification_with_the_key_inside_the_window_is_merged_into_the_first(
    s: Subject,
) {
    let first = s.put(keyed(&s, "mail", "ops", "disk-full", 60_000)).await;
    s.clock.advance(Duration::from_secs(30));
    let again = NewNotification {
        body: Some("Disk still full".into()),
        content_hash: "h2".into(),
        ..keyed(&s, "mail", "ops", "disk-full", 60_000)
    };
    let again_id = again.id.clone();

    assert_eq!(
        s.outbox.enqueue(vec![again]).await.unwrap(),
        vec![Enqueued::Deduplicated {
            id: first.clone(),
            state: State::Queued
        }]
    );
    assert!(s.outbox.get(&again_id).await.unwrap().is_none());
    let view = s.outbox.get(&first).await.unwrap().unwrap();
    assert_eq!(view.duplicates, 1);
    assert_eq!(view.state, State::Queued);
    let rules: Vec<(&str, i64)> = view
        .events
        .iter()
        .map(|e| (e.rule.as_str(), e.at_ms))
        .collect();
    assert_eq!(rules, vec![("dedup", s.now())]);
    assert!(view.events[0].detail.contains("disk-full"));
}

pub async fn a_dedup_key_is_scoped_to_its_channel_and_recipient(s: Subject) {
    let first = s.put(keyed(&s, "mail", "ops", "k", 60_000)).await;
    let other_recipient = keyed(&s, "mail", "dev", "k", 60_000);
    let other_channel = keyed(&s, "sms", "ops", "k", 60_000);
    let (a, b) = (other_recipient.id.clone(), other_channel.id.clone());

    assert_eq!(
        s.outbox
            .enqueue(vec![other_recipient, other_channel])
            .await
            .unwrap(),
        vec![Enqueued::Created { id: a }, Enqueued::Created { id: b }]
    );
    assert_eq!(s.outbox.get(&first).await.unwrap().unwrap().duplicates, 0);
}

pub async fn once_the_window_is_over_the_next_notification_takes_the_key(s: Subject) {
    let first = s.put(keyed(&s, "mail", "ops", "k", 60_000)).await;
    s.clock.advance(Duration::from_millis(59_999));
    let inside = keyed(&s, "mail", "ops", "k", 60_000);
    assert!(matches!(
        s.outbox.enqueue(vec![inside]).await.unwrap()[0],
        Enqueued::Deduplicated { .. }
    ));

    s.clock.advance(Duration::from_millis(1));
    let second = s.put(keyed(&s, "mail", "ops", "k", 60_000)).await;
    let later = keyed(&s, "mail", "ops", "k", 60_000);
    assert_eq!(
        s.outbox.enqueue(vec![later]).await.unwrap(),
        vec![Enqueued::Deduplicated {
            id: second.clone(),
            state: State::Queued
        }]
    );
    assert_eq!(s.outbox.get(&first).await.unwrap().unwrap().duplicates, 1);
    assert_eq!(s.outbox.get(&second).await.unwrap().unwrap().duplicates, 1);
}

pub async fn each_item_of_one_enqueue_is_deduplicated_on_its_own(s: Subject) {
    let a = keyed(&s, "mail", "ops", "k", 60_000);
    let plain = s.note("mail");
    let b = keyed(&s, "mail", "ops", "k", 60_000);
    let c = keyed(&s, "mail", "ops", "other", 60_000);
    let (a_id, plain_id, c_id) = (a.id.clone(), plain.id.clone(), c.id.clone());

    assert_eq!(
        s.outbox.enqueue(vec![a, plain, b, c]).await.unwrap(),
        vec![
            Enqueued::Created { id: a_id.clone() },
            Enqueued::Created { id: plain_id },
            Enqueued::Deduplicated {
                id: a_id.clone(),
                state: State::Queued
            },
            Enqueued::Created { id: c_id },
        ]
    );
    assert_eq!(s.outbox.get(&a_id).await.unwrap().unwrap().duplicates, 1);
}

pub async fn a_replayed_idempotency_key_is_a_replay_not_a_duplicate(s: Subject) {
    let first = NewNotification {
        idempotency_key: Some("order-1".into()),
        ..keyed(&s, "mail", "ops", "k", 60_000)
    };
    let original = s.put(first.clone()).await;
    let again = NewNotification {
        id: "another-id".into(),
        ..first
    };

    assert_eq!(
        s.outbox.enqueue(vec![again]).await.unwrap(),
        vec![Enqueued::Duplicate {
            id: original.clone(),
            state: State::Queued
        }]
    );
    assert_eq!(
        s.outbox.get(&original).await.unwrap().unwrap().duplicates,
        0
    );
}

pub async fn a_duplicate_of_a_delivered_notification_reports_its_state(s: Subject) {
    let first = s.put(keyed(&s, "mail", "ops", "k", 60_000)).await;
    let row = s.claim_only("mail", &first).await;
    s.complete(&row, super::delivered("p-1")).await;

    assert_eq!(
        s.outbox
            .enqueue(vec![keyed(&s, "mail", "ops", "k", 60_000)])
            .await
            .unwrap(),
        vec![Enqueued::Deduplicated {
            id: first,
            state: State::Delivered
        }]
    );
    assert!(s.claim("mail", 10).await.is_empty());
}

pub async fn a_key_whose_holder_was_purged_is_taken_by_the_next(s: Subject) {
    let day = 86_400_000;
    let first = s.put(keyed(&s, "mail", "ops", "k", 7 * day)).await;
    let row = s.claim_only("mail", &first).await;
    s.complete(&row, super::delivered("p-1")).await;
    s.clock.advance(Duration::from_secs(2 * 3600));
    let retention = notifyd::outbox::Retention {
        finished_ms: 3_600_000,
        unmatched_receipts_ms: day,
    };
    let report = s.outbox.sweep(&["mail".into()], &retention).await.unwrap();
    assert_eq!(report.purged, 1);

    let next = keyed(&s, "mail", "ops", "k", 60_000);
    let next_id = next.id.clone();
    assert_eq!(
        s.outbox.enqueue(vec![next]).await.unwrap(),
        vec![Enqueued::Created {
            id: next_id.clone()
        }]
    );
    assert_eq!(
        s.outbox
            .enqueue(vec![keyed(&s, "mail", "ops", "k", 60_000)])
            .await
            .unwrap(),
        vec![Enqueued::Deduplicated {
            id: next_id,
            state: State::Queued
        }]
    );
}
