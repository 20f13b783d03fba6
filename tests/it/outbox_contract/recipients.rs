//! Recipient preferences: stored beside the queue, read back for a claim's recipients at once.

use notifyd::DeliverBetween;
use notifyd::Preferences;
use notifyd::WindowSpec;
use notifyd::outbox::NewNotification;

use super::Subject;

fn night_owl() -> Preferences {
    Preferences {
        time_zone: Some("Europe/Paris".into()),
        quiet_hours: Some(WindowSpec {
            start: "22:00".into(),
            end: "07:00".into(),
        }),
        muted: vec!["sms".into()],
        opted_out: vec!["newsletter".into()],
        high_priority_passes: false,
    }
}

pub async fn preferences_are_stored_replaced_and_read_back_by_address(s: Subject) {
    s.outbox
        .put_preferences("alice@example.com", &Preferences::default())
        .await
        .unwrap();
    s.outbox
        .put_preferences("alice@example.com", &night_owl())
        .await
        .unwrap();
    s.outbox
        .put_preferences("+4915112345678", &Preferences::default())
        .await
        .unwrap();
    let mut got = s
        .outbox
        .preferences(&[
            "alice@example.com".into(),
            "+4915112345678".into(),
            "nobody@example.com".into(),
        ])
        .await
        .unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("+4915112345678".to_owned(), Preferences::default()),
            ("alice@example.com".to_owned(), night_owl()),
        ]
    );
}

pub async fn deleted_preferences_are_gone_and_a_second_delete_finds_nothing(s: Subject) {
    s.outbox
        .put_preferences("bob@example.com", &night_owl())
        .await
        .unwrap();
    assert!(
        s.outbox
            .delete_preferences("bob@example.com")
            .await
            .unwrap()
    );
    assert!(
        !s.outbox
            .delete_preferences("bob@example.com")
            .await
            .unwrap()
    );
    let got = s
        .outbox
        .preferences(&["bob@example.com".into()])
        .await
        .unwrap();
    assert_eq!(got, vec![]);
}

pub async fn an_opt_out_adds_the_channel_once_and_keeps_the_rest(s: Subject) {
    s.outbox
        .put_preferences("carol@example.com", &night_owl())
        .await
        .unwrap();
    s.outbox
        .opt_out("carol@example.com", &"mail".into(), None)
        .await
        .unwrap();
    let after = s
        .outbox
        .opt_out("carol@example.com", &"mail".into(), None)
        .await
        .unwrap();
    assert_eq!(after.opted_out, ["mail", "newsletter"]);
    assert_eq!(after.muted, ["sms"]);
    let stored = s
        .outbox
        .preferences(&["carol@example.com".into()])
        .await
        .unwrap();
    assert_eq!(stored[0].1, after);
}

pub async fn an_opt_out_of_an_unknown_recipient_creates_its_preferences(s: Subject) {
    let prefs = s
        .outbox
        .opt_out("dave@example.com", &"mail".into(), None)
        .await
        .unwrap();
    assert_eq!(
        prefs,
        Preferences {
            opted_out: vec!["mail".into()],
            ..Preferences::default()
        }
    );
}

pub async fn a_claimed_notification_carries_its_priority_and_delivery_window(s: Subject) {
    let window = DeliverBetween {
        start: "09:00".into(),
        end: "17:00".into(),
        time_zone: Some("Europe/Paris".into()),
    };
    let id = s
        .put(NewNotification {
            priority: notifyd::outbox::Priority::Low,
            deliver_between: Some(window.clone()),
            ..s.note("mail")
        })
        .await;
    let plain = s.put(s.note("mail")).await;
    let claimed = s.claim("mail", 10).await;
    let of = |id: &str| claimed.iter().find(|c| c.message.id == id).unwrap();
    assert_eq!(of(&id).priority, notifyd::outbox::Priority::Low);
    assert_eq!(of(&id).deliver_between, Some(window));
    assert_eq!(of(&plain).priority, notifyd::outbox::Priority::Normal);
    assert_eq!(of(&plain).deliver_between, None);
}

pub async fn a_held_notification_waits_unspent_with_its_event_and_a_lost_lease_writes_none(
    s: Subject,
) {
    use notifyd::outbox::{Outcome, Rule, RuleEvent, State};
    let id = s.put(s.note("mail")).await;
    let row = s.claim_only("mail", &id).await;
    let until = s.now() + 3_600_000;
    let held = |row: &notifyd::outbox::Claimed, detail: &str| notifyd::outbox::Completion {
        events: vec![RuleEvent {
            notification: row.message.id.clone().into(),
            at_ms: s.now(),
            rule: Rule::QuietHours,
            detail: detail.into(),
        }],
        ..super::completion(
            row,
            Outcome::Retry {
                run_at_ms: until,
                refund_attempt: true,
                code: "quiet_hours".into(),
                error: "inside quiet hours".into(),
            },
        )
    };
    s.outbox.complete(vec![held(&row, "held")]).await.unwrap();
    // The same lease again: its change is refused, so its event is not written either.
    s.outbox.complete(vec![held(&row, "stale")]).await.unwrap();
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Queued);
    assert_eq!(view.attempts, 0);
    assert_eq!(view.run_at_ms, until);
    assert_eq!(view.last_code.as_deref(), Some("quiet_hours"));
    let rules: Vec<(&str, &str)> = view
        .events
        .iter()
        .map(|e| (e.rule.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(rules, vec![("quiet_hours", "held")]);
    assert!(s.claim("mail", 10).await.is_empty(), "held until its time");
}
