//! The searchable history and a notification's content.

use notifyd::outbox::{
    Content, HistoryFilter, HistoryQuery, MAX_WALK, NewNotification, NotificationId, Priority,
    State,
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
async fn put_spaced(s: &Subject, channel: &str, n: usize) -> Vec<NotificationId> {
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
    assert_eq!(s.outbox.content(&"no-such-id".into()).await.unwrap(), None);
}

pub async fn the_subject_text_is_literal_and_case_insensitive_for_ascii(s: Subject) {
    let percent = s
        .put(NewNotification {
            subject: Some("Order 100% shipped".into()),
            ..s.note("mail")
        })
        .await;
    s.clock.advance(std::time::Duration::from_millis(1));
    let plain = s
        .put(NewNotification {
            subject: Some("ORDER 1000 shipped".into()),
            ..s.note("mail")
        })
        .await;
    let search = |text: &str| {
        let filter = HistoryFilter {
            subject_contains: Some(text.into()),
            ..HistoryFilter::default()
        };
        let outbox = &s.outbox;
        async move {
            let page = outbox.history(&query(filter, 10)).await.unwrap();
            page.items.into_iter().map(|i| i.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search("100%").await,
        vec![percent.clone()],
        "% is no wildcard"
    );
    assert_eq!(
        search("0_0").await,
        Vec::<String>::new(),
        "_ is no wildcard"
    );
    assert_eq!(search("order").await, vec![plain, percent]);
}

pub async fn the_history_filters_by_priority_creation_time_and_parent(s: Subject) {
    let early = s.put(s.note("mail")).await;
    s.clock.advance(std::time::Duration::from_millis(10));
    let high = s
        .put(NewNotification {
            priority: Priority::High,
            ..s.note("mail")
        })
        .await;
    let high_at = s.now();
    let ids = |page: notifyd::outbox::HistoryPage| {
        page.items.into_iter().map(|i| i.id).collect::<Vec<_>>()
    };
    let by_priority = HistoryFilter {
        priority: Some(Priority::High),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(by_priority, 10)).await.unwrap();
    assert_eq!(ids(page), vec![high.clone()]);
    let before_high = HistoryFilter {
        created_before_ms: Some(high_at),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(before_high, 10)).await.unwrap();
    assert_eq!(ids(page), vec![early.clone()]);
    let from_high = HistoryFilter {
        created_after_ms: Some(high_at),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(from_high, 10)).await.unwrap();
    assert_eq!(ids(page), vec![high]);
    let children = HistoryFilter {
        fallback_of: Some(early.into()),
        ..HistoryFilter::default()
    };
    assert!(
        s.outbox
            .history(&query(children, 10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn a_rare_text_is_found_a_bounded_walk_at_a_time(s: Subject) {
    let mut ids = Vec::new();
    for i in 0..30 {
        let subject = if i == 0 {
            "Refund processed"
        } else {
            "Subject"
        };
        ids.push(
            s.put(NewNotification {
                subject: Some(subject.into()),
                ..s.note("mail")
            })
            .await,
        );
        s.clock.advance(std::time::Duration::from_millis(1));
    }
    let filter = HistoryFilter {
        subject_contains: Some("refund".into()),
        ..HistoryFilter::default()
    };
    let (mut found, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = s
            .outbox
            .history(&HistoryQuery {
                after,
                max_walk: 10,
                ..query(filter.clone(), 5)
            })
            .await
            .unwrap();
        pages += 1;
        found.extend(page.items.into_iter().map(|i| i.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        found,
        vec![ids[0].clone()],
        "the oldest of 30 is the one match"
    );
    assert_eq!(
        pages, 4,
        "three walks of 10 rows, then an empty one says it is the end"
    );
}

pub async fn the_history_filters_by_update_time(s: Subject) {
    let sent = s.put(s.note("mail")).await;
    let waiting = s.put(s.note("sms")).await;
    let row = s.claim_only("mail", &sent).await;
    s.clock.advance(std::time::Duration::from_millis(10));
    s.complete(&row, super::delivered("p-1")).await;
    let delivered_at = s.now();
    let ids = |page: notifyd::outbox::HistoryPage| {
        page.items.into_iter().map(|i| i.id).collect::<Vec<_>>()
    };
    let since = HistoryFilter {
        updated_after_ms: Some(delivered_at),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(since, 10)).await.unwrap();
    assert_eq!(ids(page), vec![sent], "updated_after is inclusive");
    let until = HistoryFilter {
        updated_before_ms: Some(delivered_at),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(until, 10)).await.unwrap();
    assert_eq!(ids(page), vec![waiting], "updated_before is exclusive");
}

pub async fn the_history_finds_the_fallbacks_of_a_notification(s: Subject) {
    let parent = s
        .put(NewNotification {
            fallback: vec![notifyd::outbox::FallbackRoute {
                target: notifyd::outbox::FallbackTarget {
                    channel: "sms".into(),
                    to: "+15551234567".into(),
                },
                content: None,
            }],
            ..s.note("push")
        })
        .await;
    let unrelated = s.put(s.note("sms")).await;
    let row = s.claim_only("push", &parent).await;
    s.complete(&row, super::finish(State::Failed, true)).await;
    let child = s
        .claim("sms", 10)
        .await
        .into_iter()
        .map(|c| c.message.id)
        .find(|id| *id != unrelated)
        .expect("the fallback child");
    let of = |id: &str| HistoryFilter {
        fallback_of: Some(id.to_owned()),
        ..HistoryFilter::default()
    };
    let page = s.outbox.history(&query(of(&parent), 10)).await.unwrap();
    let found: Vec<_> = page.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(found, vec![child]);
    assert_eq!(page.items[0].parent_id.as_deref(), Some(parent.as_str()));
    let page = s.outbox.history(&query(of(&unrelated), 10)).await.unwrap();
    assert!(page.items.is_empty());
}
