//! The delivery rules' timeline: events stored beside a notification, shown with it, purged
//! with it.

use std::time::Duration;

use notifyd::outbox::{EventView, Retention, Rule, RuleEvent};

use super::*;

const DAY_MS: i64 = 86_400_000;

fn event(id: &str, at_ms: i64, rule: Rule, detail: &str) -> RuleEvent {
    RuleEvent {
        notification: id.into(),
        at_ms,
        rule,
        detail: detail.into(),
    }
}

pub async fn rule_events_are_shown_with_their_notification_oldest_first(s: Subject) {
    let id = s.put(s.note("c")).await;
    let t = s.now();
    s.outbox
        .record_events(vec![
            event(&id, t + 5, Rule::Escalation, "step 1 to sms"),
            event(&id, t, Rule::QuietHours, "held until 07:00 Europe/Paris"),
        ])
        .await
        .unwrap();
    s.outbox
        .record_events(vec![event(&id, t + 9, Rule::Ack, "by API")])
        .await
        .unwrap();

    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(
        view.events,
        vec![
            EventView {
                at_ms: t,
                rule: "quiet_hours".into(),
                detail: "held until 07:00 Europe/Paris".into()
            },
            EventView {
                at_ms: t + 5,
                rule: "escalation".into(),
                detail: "step 1 to sms".into()
            },
            EventView {
                at_ms: t + 9,
                rule: "ack".into(),
                detail: "by API".into()
            },
        ]
    );
    let other = s.put(s.note("c")).await;
    assert!(
        s.outbox
            .get(&other)
            .await
            .unwrap()
            .unwrap()
            .events
            .is_empty()
    );
}

pub async fn retention_purges_a_notifications_events_with_it(s: Subject) {
    let note = s.note("c");
    let id = s.put(note.clone()).await;
    s.outbox
        .record_events(vec![event(&id, s.now(), Rule::Dedup, "1 duplicate")])
        .await
        .unwrap();
    let row = s.claim_only("c", &id).await;
    s.complete(&row, delivered("P-1")).await;
    s.clock.advance(Duration::from_millis(DAY_MS as u64 + 1));
    let keep_a_day = Retention {
        finished_ms: DAY_MS,
        unmatched_receipts_ms: DAY_MS,
    };
    let report = s.outbox.sweep(&["c".into()], &keep_a_day).await.unwrap();
    assert_eq!(report.purged, 1);

    // The same id again: a new notification starts with an empty timeline.
    let again = s
        .put(NewNotification {
            created_at_ms: s.now(),
            run_at_ms: s.now(),
            ..note
        })
        .await;
    assert_eq!(again, id);
    assert!(s.outbox.get(&id).await.unwrap().unwrap().events.is_empty());
}
