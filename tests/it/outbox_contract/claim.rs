//! Claim order, scheduling and leases.

use std::time::Duration;

use notifyd::outbox::{NewNotification, NotificationId, Priority};

use super::{LEASE, Subject, ids};

/// Four due rows of `c`, enqueued out of order; their ids in claim order: high, then normal by
/// due time (earliest first), then low.
async fn four_due_rows(s: &Subject) -> Vec<NotificationId> {
    let now = s.now();
    let at = |priority, run_at_ms| NewNotification {
        priority,
        run_at_ms,
        ..s.note("c")
    };
    let low = s.put(at(Priority::Low, now - 3000)).await;
    let normal_late = s.put(at(Priority::Normal, now - 1000)).await;
    let normal_early = s.put(at(Priority::Normal, now - 2000)).await;
    let high = s.put(at(Priority::High, now)).await;
    vec![high, normal_early, normal_late, low]
}

pub async fn a_claim_takes_high_priority_first_then_earliest_due(s: Subject) {
    let expected = four_due_rows(&s).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        order.extend(ids(&s.claim("c", 1).await));
    }
    assert_eq!(order, expected);
}

pub async fn a_claim_of_several_takes_the_first_in_that_order_highest_priority_first(s: Subject) {
    let expected = four_due_rows(&s).await;
    assert_eq!(ids(&s.claim("c", 2).await), expected[..2]);
    assert_eq!(ids(&s.claim("c", 2).await), expected[2..]);
}

pub async fn a_claim_takes_only_its_channel_and_at_most_its_limit(s: Subject) {
    let first = s.put(s.note("a")).await;
    let second = s.put(s.note("a")).await;
    s.put(s.note("b")).await;
    assert_eq!(ids(&s.claim("a", 1).await), vec![first]);
    assert_eq!(ids(&s.claim("a", 10).await), vec![second]);
    assert!(s.claim("a", 10).await.is_empty());
    assert!(
        s.outbox
            .claim(&"b".into(), 0, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.claim("b", 10).await.len(), 1);
}

pub async fn a_claim_counts_the_attempt_and_carries_the_message(s: Subject) {
    let n = NewNotification {
        html: Some("<p>Body</p>".into()),
        data: Some(serde_json::json!({"order": 42})),
        expires_at_ms: Some(s.now() + 60_000),
        ..s.note("mail")
    };
    let id = s.put(n.clone()).await;
    let row = s.claim_only("mail", &id).await;
    assert_eq!(row.attempt, 1);
    assert_eq!(row.message.channel, "mail");
    assert_eq!(row.message.to, "ops@example.com");
    assert_eq!(row.message.subject.as_deref(), Some("Subject"));
    assert_eq!(row.message.body.as_deref(), Some("Body"));
    assert_eq!(row.message.html.as_deref(), Some("<p>Body</p>"));
    assert_eq!(row.message.data, Some(serde_json::json!({"order": 42})));
    assert_eq!(row.expires_at_ms, n.expires_at_ms);
    assert!(row.tried.is_empty());
    assert_eq!(
        s.outbox.get(&id).await.unwrap().unwrap().state,
        notifyd::outbox::State::Sending
    );
}

pub async fn a_scheduled_notification_is_claimed_only_once_due(s: Subject) {
    let id = s
        .put(NewNotification {
            run_at_ms: s.now() + 30_000,
            ..s.note("c")
        })
        .await;
    assert!(s.claim("c", 10).await.is_empty());
    s.clock.advance(Duration::from_millis(29_999));
    assert!(s.claim("c", 10).await.is_empty());
    s.clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&s.claim("c", 10).await), vec![id]);
}

pub async fn a_leased_notification_is_not_claimed_again_while_its_lease_runs(s: Subject) {
    let id = s.put(s.note("c")).await;
    s.claim_only("c", &id).await;
    s.clock.advance(LEASE - Duration::from_millis(1));
    assert!(s.claim("c", 10).await.is_empty());
}

pub async fn an_expired_lease_is_claimed_again_with_the_next_attempt_and_a_higher_token(
    s: Subject,
) {
    let id = s.put(s.note("c")).await;
    let first = s.claim_only("c", &id).await;
    s.clock.advance(LEASE);
    let second = s.claim_only("c", &id).await;
    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert!(second.lease > first.lease);
}
