//! The searchable history and a notification's content.

use notifyd::outbox::{
    Content, HistoryFilter, HistoryQuery, MAX_WALK, NewNotification, Priority, State,
};

use super::Subject;

fn query(filter: HistoryFilter, limit: usize) -> HistoryQuery {
    HistoryQuery {
        filter,
        after: None,
        limit,
        max_walk: MAX_WALK,
    }
}

/// Enqueues `n` notifications to `channel`, one millisecond apart; their ids, oldest first.
async fn put_spaced(s: &Subject, channel: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s.put(s.note(channel)).await);
        s.clock.advance(std::time::Duration::from_millis(1));
    }
    ids
}

pub async fn the_history_pages_newest_first_without_repeats_or_gaps(s: Subject) {
    let mut ids = put_spaced(&s, "mail", 5).await;
    ids.reverse();
    let first = s
        .outbox
        .history(&query(HistoryFilter::default(), 2))
        .await
        .unwrap();
    let got: Vec<_> = first.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(got, ids[..2]);
    // A notification accepted meanwhile does not shift the pages that follow.
    s.put(s.note("mail")).await;
    let mut seen = got;
    let mut next = first.next;
    while let Some(after) = next {
        let page = s
            .outbox
            .history(&HistoryQuery {
                after: Some(after),
                ..query(HistoryFilter::default(), 2)
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|i| i.id.clone()));
        next = page.next;
    }
    assert_eq!(seen, ids);
}

pub async fn the_history_filters_by_recipient_state_and_channel(s: Subject) {
    let alice = s
        .put(NewNotification {
            to: "alice@example.com".into(),
            subject: Some("Invoice 7".into()),
            priority: Priority::High,
            ..s.note("mail")
        })
        .await;
    s.put(s.note("mail")).await;
    s.put(s.note("sms")).await;
    let by_recipient = HistoryFilter {
        recipient: Some("alice@example.com".into()),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(by_recipient, 10)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let item = &page.items[0];
    assert_eq!(
        (
            item.id.as_str(),
            item.channel.as_str(),
            item.state,
            item.priority
        ),
        (alice.as_str(), "mail", State::Queued, Priority::High)
    );
    assert_eq!(item.subject.as_deref(), Some("Invoice 7"));
    assert!(page.next.is_none());

    let sms = HistoryFilter {
        channel: Some("sms".into()),
        ..HistoryFilter::default()
    };
    assert_eq!(
        s.outbox.history(&query(sms, 10)).await.unwrap().items.len(),
        1
    );
    let subject = HistoryFilter {
        subject_contains: Some("invoice".into()),
        ..HistoryFilter::default()
    };
    let found = s.outbox.history(&query(subject, 10)).await.unwrap();
    assert_eq!(found.items.len(), 1);
    let cancelled = HistoryFilter {
        state: Some(State::Cancelled),
        ..HistoryFilter::default()
    };
    assert!(
        s.outbox
            .history(&query(cancelled.clone(), 10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    s.outbox.cancel(&alice).await.unwrap();
    let page = s.outbox.history(&query(cancelled, 10)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, alice);
}

pub async fn the_content_of_a_notification_is_read_back(s: Subject) {
    let id = s
        .put(NewNotification {
            html: Some("<p>Body</p>".into()),
            data: Some(serde_json::json!({"order": 42})),
            ..s.note("mail")
        })
        .await;
    assert_eq!(
        s.outbox.content(&id).await.unwrap(),
        Some(Content {
            subject: Some("Subject".into()),
            body: Some("Body".into()),
            html: Some("<p>Body</p>".into()),
            data: Some(serde_json::json!({"order": 42})),
        })
    );
    assert_eq!(s.outbox.content("no-such-id").await.unwrap(), None);
}
