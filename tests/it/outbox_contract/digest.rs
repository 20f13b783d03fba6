//! Digests: items join one open digest per (channel, recipient, key); the digest is claimed
//! once, when its window ends or it is full, and its items end as it ends.

use std::time::Duration;

use notifyd::outbox::{DigestJoin, NewNotification, Outcome, State, Transition};
use serde_json::json;

use super::{LEASE, Subject, finish};

/// An item of `channel` to `to` for digest `key`, whose window would end in a minute, full at
/// `max` items.
fn item(s: &Subject, to: &str, key: &str, max: u32) -> NewNotification {
    NewNotification {
        to: to.into(),
        digest: Some(DigestJoin {
            key: key.into(),
            until_ms: s.now() + 60_000,
            max,
            vars: Some(json!({"host": to})),
        }),
        ..s.note("mail")
    }
}

/// The digest `id` was collected into.
async fn digest_of(s: &Subject, id: &str) -> String {
    let view = s.outbox.get(&id.into()).await.unwrap().unwrap();
    view.digest_id.expect("collected into a digest").into()
}

pub async fn items_with_one_key_join_one_digest_sent_when_its_window_ends(s: Subject) {
    let a = s.put(item(&s, "ops", "daily", 10)).await;
    s.clock.advance(Duration::from_secs(30));
    let b = s.put(item(&s, "ops", "daily", 10)).await;
    let digest = digest_of(&s, &a).await;
    assert_eq!(digest_of(&s, &b).await, digest);
    assert_eq!(s.state(&a).await, State::Queued);

    // Neither the items nor the digest are due inside the window (it ends 60 s after `a`).
    s.clock.advance(Duration::from_millis(29_999));
    assert!(s.claim("mail", 10).await.is_empty());
    s.clock.advance(Duration::from_millis(1));
    let claimed = s.claim_only("mail", &digest).await;

    assert_eq!(claimed.digest_key.as_deref(), Some("daily"));
    assert_eq!(claimed.message.to, "ops");
    let items = s
        .outbox
        .digest_items(&digest.as_str().into())
        .await
        .unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert_eq!(items[0].body.as_deref(), Some("Body"));
    assert_eq!(items[0].vars, Some(json!({"host": "ops"})));
    let view = s
        .outbox
        .get(&digest.as_str().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.digest_key.as_deref(), Some("daily"));
    let events = s.outbox.get(&a).await.unwrap().unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].rule, "digest");
    assert!(events[0].detail.contains(&digest));
}

pub async fn a_digest_is_scoped_to_its_recipient_and_key(s: Subject) {
    let a = s.put(item(&s, "ops", "daily", 10)).await;
    let b = s.put(item(&s, "dev", "daily", 10)).await;
    let c = s.put(item(&s, "ops", "weekly", 10)).await;

    let digests = [
        digest_of(&s, &a).await,
        digest_of(&s, &b).await,
        digest_of(&s, &c).await,
    ];
    assert_ne!(digests[0], digests[1]);
    assert_ne!(digests[0], digests[2]);
    assert_ne!(digests[1], digests[2]);
}

pub async fn a_digest_that_fills_up_is_sent_at_once(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 2)).await;
    assert!(s.claim("mail", 10).await.is_empty());
    let b = s.put(item(&s, "ops", "k", 2)).await;
    let digest = digest_of(&s, &a).await;

    s.claim_only("mail", &digest).await;
    // Full: the next item opens the next digest.
    let c = s.put(item(&s, "ops", "k", 2)).await;
    assert_eq!(digest_of(&s, &b).await, digest);
    assert_ne!(digest_of(&s, &c).await, digest);
}

pub async fn an_item_after_the_digest_was_claimed_opens_the_next(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 10)).await;
    s.clock.advance(Duration::from_secs(60));
    let first = digest_of(&s, &a).await;
    s.claim_only("mail", &first).await;

    let b = s.put(item(&s, "ops", "k", 10)).await;

    let next = digest_of(&s, &b).await;
    assert_ne!(next, first);
    assert_eq!(
        s.outbox
            .digest_items(&first.as_str().into())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.outbox
            .digest_items(&next.as_str().into())
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn a_delivered_digest_delivers_its_items_with_its_provider_id(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 2)).await;
    let b = s.put(item(&s, "ops", "k", 2)).await;
    let digest = digest_of(&s, &a).await;
    let row = s.claim_only("mail", &digest).await;

    s.complete(&row, super::delivered("p-7")).await;

    for id in [&a, &b] {
        let view = s.outbox.get(id).await.unwrap().unwrap();
        assert_eq!(view.state, State::Delivered);
        assert_eq!(view.provider_id.as_deref(), Some("p-7"));
        let last = view.events.last().unwrap();
        assert_eq!(last.rule, "digest");
        assert_eq!(
            last.detail,
            format!("delivered with digest {digest} (its attempt 1)")
        );
    }
    assert_eq!(s.state(&digest).await, State::Delivered);
}

pub async fn a_failed_digest_fails_its_items_with_its_reason(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 1)).await;
    let digest = digest_of(&s, &a).await;
    let row = s.claim_only("mail", &digest).await;

    s.complete(&row, finish(State::Dead, false)).await;

    let view = s.outbox.get(&a).await.unwrap().unwrap();
    assert_eq!(view.state, State::Failed);
    assert_eq!(view.last_code.as_deref(), Some("http_503"));
    assert_eq!(
        view.last_error.as_deref(),
        Some(format!("its digest {digest} ended dead: down").as_str())
    );
}

pub async fn a_retried_digest_keeps_its_items_waiting_and_is_claimed_again(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 1)).await;
    let digest = digest_of(&s, &a).await;
    let row = s.claim_only("mail", &digest).await;

    s.complete(
        &row,
        Outcome::Retry {
            run_at_ms: s.now() + 1_000,
            refund_attempt: false,
            code: "http_503".into(),
            error: "down".into(),
        },
    )
    .await;

    assert_eq!(s.state(&a).await, State::Queued);
    s.clock.advance(Duration::from_secs(1));
    let again = s.claim_only("mail", &digest).await;
    assert_eq!(again.attempt, 2);
    assert_eq!(
        s.outbox
            .digest_items(&digest.as_str().into())
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn a_digest_whose_lease_expired_is_claimed_once_more_never_twice_at_once(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 1)).await;
    let digest = digest_of(&s, &a).await;
    s.claim_only("mail", &digest).await;
    assert!(s.claim("mail", 10).await.is_empty());

    // The daemon holding it died: after its lease, another claim takes the same digest.
    s.clock.advance(LEASE);
    let again = s.claim_only("mail", &digest).await;
    assert_eq!(again.digest_key.as_deref(), Some("k"));
}

pub async fn cancelling_a_digest_fails_its_waiting_items(s: Subject) {
    let a = s.put(item(&s, "ops", "k", 10)).await;
    let digest = digest_of(&s, &a).await;

    assert_eq!(
        s.outbox.cancel(&digest.as_str().into()).await.unwrap(),
        Transition::Done(State::Cancelled)
    );

    let view = s.outbox.get(&a).await.unwrap().unwrap();
    assert_eq!(view.state, State::Failed);
    assert_eq!(view.last_code.as_deref(), Some("cancelled"));
}
