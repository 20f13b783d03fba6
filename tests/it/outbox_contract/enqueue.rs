//! Enqueue and idempotency.

use notifyd::outbox::{Enqueued, KeyHolder, NewNotification, Priority, State};

use super::Subject;

pub async fn a_new_notification_is_stored_queued_as_submitted(s: Subject) {
    let n = NewNotification {
        priority: Priority::High,
        expires_at_ms: Some(s.now() + 3_600_000),
        ..s.note("mail")
    };
    let id = s.put(n.clone()).await;
    assert_eq!(id, n.id);
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.channel, "mail");
    assert_eq!(view.to, "ops@example.com");
    assert_eq!(view.state, State::Queued);
    assert_eq!(view.priority, Priority::High);
    assert_eq!(view.attempts, 0);
    assert_eq!(view.run_at_ms, n.run_at_ms);
    assert_eq!(view.created_at_ms, n.created_at_ms);
    assert_eq!(view.expires_at_ms, n.expires_at_ms);
    assert!(s.outbox.get(&"no-such-id".into()).await.unwrap().is_none());
}

pub async fn the_same_key_with_the_same_content_returns_the_original(s: Subject) {
    let first = NewNotification {
        idempotency_key: Some("order-42".into()),
        ..s.note("mail")
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
            state: State::Queued,
        }]
    );
    assert!(s.outbox.get(&"another-id".into()).await.unwrap().is_none());
}

pub async fn the_same_key_with_other_content_is_a_conflict_naming_the_holder(s: Subject) {
    let first = NewNotification {
        idempotency_key: Some("order-42".into()),
        ..s.note("mail")
    };
    let original = s.put(first.clone()).await;
    let other = NewNotification {
        id: "another-id".into(),
        content_hash: "h2".into(),
        body: Some("Other body".into()),
        ..first
    };
    assert_eq!(
        s.outbox.enqueue(vec![other]).await.unwrap(),
        vec![Enqueued::Conflict { id: original }]
    );
    assert!(s.outbox.get(&"another-id".into()).await.unwrap().is_none());
}

pub async fn a_key_is_found_with_its_holder_and_an_unused_key_is_not(s: Subject) {
    let id = s
        .put(NewNotification {
            idempotency_key: Some("k1".into()),
            ..s.note("mail")
        })
        .await;
    assert_eq!(
        s.outbox.find_key("k1").await.unwrap(),
        Some(KeyHolder {
            id,
            state: State::Queued,
            content_hash: Some("h1".into()),
        })
    );
    assert_eq!(s.outbox.find_key("k2").await.unwrap(), None);
}

pub async fn one_enqueue_of_several_answers_each_in_order(s: Subject) {
    let keyed = NewNotification {
        idempotency_key: Some("k".into()),
        ..s.note("mail")
    };
    let original = s.put(keyed.clone()).await;
    let fresh = s.note("mail");
    let conflicting = NewNotification {
        id: "x".into(),
        content_hash: "other".into(),
        ..keyed
    };
    let answers = s
        .outbox
        .enqueue(vec![fresh.clone(), conflicting])
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![
            Enqueued::Created { id: fresh.id },
            Enqueued::Conflict { id: original }
        ]
    );
}

pub async fn the_source_of_an_ingested_notification_is_read_back(s: Subject) {
    let source = serde_json::json!({"format": "alertmanager", "route": "ops", "ids": ["fp-1"]});
    let ingested = NewNotification {
        source: Some(source.to_string()),
        ..s.note("mail")
    };
    let id = s.put(ingested).await;
    let plain = s.put(s.note("mail")).await;
    assert_eq!(
        s.outbox.get(&id).await.unwrap().unwrap().source,
        Some(source)
    );
    assert_eq!(s.outbox.get(&plain).await.unwrap().unwrap().source, None);
}
