//! Where a notification goes next: its fallback routes, failover to another channel.

use std::time::Duration;

use notifyd::outbox::{
    Content, FallbackRoute, FallbackTarget, NewNotification, OpenBreakerMove, Outcome, State,
};

use super::{Subject, finish};

fn route(channel: &str, to: &str, content: Option<Content>) -> FallbackRoute {
    FallbackRoute {
        target: FallbackTarget {
            channel: channel.into(),
            to: to.into(),
        },
        content,
    }
}

pub async fn a_failure_with_a_fallback_queues_the_next_route_as_a_child(s: Subject) {
    let sms_text = Content {
        subject: None,
        body: Some("Short text".into()),
        html: None,
        data: None,
    };
    let parent = s
        .put(NewNotification {
            fallback: vec![
                route("sms", "+15551234567", None),
                route("mail", "b@example.com", Some(sms_text)),
            ],
            ..s.note("push")
        })
        .await;
    let row = s.claim_only("push", &parent).await;
    s.clock.advance(Duration::from_secs(1));
    s.complete(&row, finish(State::Failed, true)).await;
    assert_eq!(s.state(&parent).await, State::Failed);

    // Due at once (the clock has not moved since), as old as its parent.
    let child = s.claim("sms", 10).await.remove(0);
    assert_eq!(child.message.to, "+15551234567");
    assert_eq!(child.message.subject.as_deref(), Some("Subject"));
    assert_eq!(child.message.body.as_deref(), Some("Body"));
    assert_eq!(child.attempt, 1);
    let view = s
        .outbox
        .get(&child.message.id.as_str().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.parent_id.as_deref(), Some(parent.as_str()));
    assert_eq!(view.created_at_ms, s.now() - 1000);
    assert_eq!(
        view.fallback,
        vec![FallbackTarget {
            channel: "mail".into(),
            to: "b@example.com".into()
        }]
    );

    s.complete(&child, finish(State::Dead, true)).await;
    let grandchild = s.claim("mail", 10).await.remove(0);
    assert_eq!(grandchild.message.to, "b@example.com");
    assert_eq!(grandchild.message.body.as_deref(), Some("Short text"));
    assert_eq!(grandchild.message.subject, None);
    let view = s
        .outbox
        .get(&grandchild.message.id.as_str().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.parent_id, Some(child.message.id.into()));
    assert!(view.fallback.is_empty());
}

pub async fn a_failure_without_the_fallback_flag_queues_nothing(s: Subject) {
    let parent = s
        .put(NewNotification {
            fallback: vec![route("sms", "+15551234567", None)],
            ..s.note("push")
        })
        .await;
    let row = s.claim_only("push", &parent).await;
    s.complete(&row, finish(State::Expired, false)).await;
    assert_eq!(s.state(&parent).await, State::Expired);
    assert!(s.claim("sms", 10).await.is_empty());
}

pub async fn a_failover_moves_the_notification_in_place_with_a_fresh_budget(s: Subject) {
    let id = s.put(s.note("a")).await;
    let on_a = s.claim_only("a", &id).await;
    s.complete(
        &on_a,
        Outcome::Reroute {
            channel: "b".into(),
            code: "http_503".into(),
            error: "a is down".into(),
        },
    )
    .await;

    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!((view.channel.as_str(), view.state), ("b", State::Queued));
    assert_eq!((view.attempts, view.run_at_ms), (0, s.now()));
    assert_eq!(view.last_code.as_deref(), Some("http_503"));
    assert!(s.claim("a", 10).await.is_empty());
    let on_b = s.claim_only("b", &id).await;
    assert_eq!(on_b.attempt, 1);
    assert_eq!(on_b.tried, vec!["a".to_owned()]);
}

pub async fn an_open_breaker_defers_due_rows_to_the_next_probe(s: Subject) {
    let due = s.put(s.note("a")).await;
    let later = s
        .put(NewNotification {
            run_at_ms: s.now() + 120_000,
            ..s.note("a")
        })
        .await;
    let probe_at = s.now() + 30_000;
    let moved = s
        .outbox
        .move_due(
            &"a".into(),
            OpenBreakerMove::Defer { until_ms: probe_at },
            10,
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);

    let view = s.outbox.get(&due).await.unwrap().unwrap();
    assert_eq!(
        (view.state, view.run_at_ms, view.attempts),
        (State::Queued, probe_at, 0)
    );
    assert_eq!(view.last_code.as_deref(), Some("breaker_open"));
    let untouched = s.outbox.get(&later).await.unwrap().unwrap();
    assert_eq!(
        (untouched.run_at_ms, untouched.last_code),
        (s.now() + 120_000, None)
    );
    assert!(s.claim("a", 10).await.is_empty());
}

pub async fn an_open_breaker_fails_over_due_rows_that_have_not_tried_the_target(s: Subject) {
    // One row came to `a` from `b` already: it must not go back.
    let from_b = s.put(s.note("b")).await;
    let row = s.claim_only("b", &from_b).await;
    s.complete(
        &row,
        Outcome::Reroute {
            channel: "a".into(),
            code: "failed_over".into(),
            error: "b is down".into(),
        },
    )
    .await;
    let fresh = s.put(s.note("a")).await;

    let moved = s
        .outbox
        .move_due(&"a".into(), OpenBreakerMove::Reroute { to: "b".into() }, 10)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let view = s.outbox.get(&fresh).await.unwrap().unwrap();
    assert_eq!((view.channel.as_str(), view.state), ("b", State::Queued));
    assert_eq!(view.last_code.as_deref(), Some("failed_over"));
    assert_eq!(s.outbox.get(&from_b).await.unwrap().unwrap().channel, "a");
    let on_b = s.claim_only("b", &fresh).await;
    assert_eq!(on_b.tried, vec!["a".to_owned()]);
}
