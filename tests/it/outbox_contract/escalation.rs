//! Escalation and acknowledgement as the store keeps them: a delivered notification with steps
//! queues its next step due `after` later; an acknowledgement marks the chain and cancels the
//! step waiting in the queue in the same write; no step is queued once the chain is
//! acknowledged, and a step claimed before it goes on.

use std::time::Duration;

use notifyd::outbox::{
    AckSource, Acknowledged, Content, Escalation, EscalationStep, FallbackTarget, HistoryFilter,
    HistoryQuery, MAX_WALK, NewNotification, Outcome, State,
};

use super::{Subject, delivered, finish};

const MINUTE_MS: i64 = 60_000;

fn step(after_ms: i64, channel: &str, to: &str, content: Option<Content>) -> EscalationStep {
    EscalationStep {
        after_ms,
        target: FallbackTarget {
            channel: channel.into(),
            to: to.into(),
        },
        content,
    }
}

/// A notification to `on-call` by push, escalating to SMS after 5 minutes, then to a manager's
/// mail 10 minutes after that.
fn escalating(s: &Subject) -> NewNotification {
    let sms_text = Content {
        subject: None,
        body: Some("Disk full on db1 (SMS)".into()),
        html: None,
        data: None,
    };
    NewNotification {
        escalation: Escalation {
            steps: vec![
                step(5 * MINUTE_MS, "sms", "+15550001", Some(sms_text)),
                step(10 * MINUTE_MS, "mail", "boss@example.com", None),
            ],
            root: None,
        },
        ..s.note("push")
    }
}

/// The one notification linked to `parent` (its step), found as the history finds fallbacks.
async fn linked_to(s: &Subject, parent: &str) -> String {
    let page = s
        .outbox
        .history(&HistoryQuery {
            filter: HistoryFilter {
                fallback_of: Some(parent.to_owned()),
                ..HistoryFilter::default()
            },
            after: None,
            limit: 10,
            max_walk: MAX_WALK,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "one step linked to {parent}");
    page.items[0].id.clone()
}

/// Claims the root, delivers it; the clock does not move.
async fn deliver_root(s: &Subject, root: &str) {
    let row = s.claim_only("push", root).await;
    s.complete(&row, delivered("P1")).await;
}

pub async fn a_delivered_notification_queues_its_next_step_due_after_its_wait(s: Subject) {
    let root = s.put(escalating(&s)).await;
    deliver_root(&s, &root).await;
    assert!(s.claim("sms", 10).await.is_empty(), "not due before 5 min");

    s.clock
        .advance(Duration::from_millis(5 * MINUTE_MS as u64 - 1));
    assert!(s.claim("sms", 10).await.is_empty(), "not due 1 ms early");
    s.clock.advance(Duration::from_millis(1));
    let step1 = s.claim("sms", 10).await.remove(0);
    assert_eq!(step1.message.to, "+15550001");
    assert_eq!(
        step1.message.body.as_deref(),
        Some("Disk full on db1 (SMS)")
    );
    let view = s
        .outbox
        .get(&step1.message.id.as_str().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.parent_id.as_deref(), Some(root.as_str()));

    // Delivered: the last step waits 10 more minutes, with the root's own content.
    s.complete(&step1, delivered("S1")).await;
    s.clock
        .advance(Duration::from_millis(10 * MINUTE_MS as u64));
    let step2 = s.claim("mail", 10).await.remove(0);
    assert_eq!(step2.message.to, "boss@example.com");
    assert_eq!(step2.message.body.as_deref(), Some("Body"));
    s.complete(&step2, delivered("M1")).await;
    s.clock.advance(Duration::from_secs(3600));
    for channel in ["push", "sms", "mail"] {
        assert!(s.claim(channel, 10).await.is_empty(), "the chain ended");
    }
}

pub async fn an_undelivered_notification_escalates_at_once(s: Subject) {
    let root = s.put(escalating(&s)).await;
    let row = s.claim_only("push", &root).await;
    s.complete(&row, finish(State::Failed, false)).await;
    let step1 = s.claim("sms", 10).await;
    assert_eq!(step1.len(), 1, "due now: nobody got the first message");
}

pub async fn an_acknowledgement_cancels_the_waiting_step_and_stops_the_chain(s: Subject) {
    let root = s.put(escalating(&s)).await;
    deliver_root(&s, &root).await;
    let step1 = linked_to(&s, &root).await;

    s.clock.advance(Duration::from_secs(60));
    let acked = s.outbox.acknowledge(&root, AckSource::Api).await.unwrap();
    assert_eq!(
        acked,
        Acknowledged::Done {
            root: root.clone(),
            at_ms: s.now(),
            cancelled: 1
        }
    );
    let view = s.outbox.get(&step1.as_str().into()).await.unwrap().unwrap();
    assert_eq!(view.state, State::Cancelled);
    assert_eq!(view.last_code.as_deref(), Some("acknowledged"));
    s.clock.advance(Duration::from_secs(3600));
    assert!(s.claim("sms", 10).await.is_empty());
    assert!(s.claim("mail", 10).await.is_empty());
}

pub async fn acknowledging_again_changes_nothing_and_names_the_first_time(s: Subject) {
    let root = s.put(escalating(&s)).await;
    let first_at = s.now();
    s.outbox.acknowledge(&root, AckSource::Link).await.unwrap();
    s.clock.advance(Duration::from_secs(30));
    let again = s.outbox.acknowledge(&root, AckSource::Api).await.unwrap();
    assert_eq!(
        again,
        Acknowledged::Already {
            root,
            at_ms: first_at
        }
    );
}

pub async fn acknowledging_a_step_acknowledges_its_chain(s: Subject) {
    let root = s.put(escalating(&s)).await;
    deliver_root(&s, &root).await;
    s.clock.advance(Duration::from_millis(5 * MINUTE_MS as u64));
    let step1 = s.claim("sms", 10).await.remove(0);
    s.complete(&step1, delivered("S1")).await;

    let acked = s
        .outbox
        .acknowledge(&step1.message.id.as_str().into(), AckSource::Receipt)
        .await
        .unwrap();
    assert!(
        matches!(&acked, Acknowledged::Done { root: r, cancelled: 1, .. } if *r == root),
        "{acked:?}"
    );
    let again = s.outbox.acknowledge(&root, AckSource::Api).await.unwrap();
    assert!(matches!(again, Acknowledged::Already { .. }), "{again:?}");
    s.clock.advance(Duration::from_secs(3600));
    assert!(s.claim("mail", 10).await.is_empty());
}

pub async fn no_step_is_queued_after_an_acknowledgement(s: Subject) {
    let root = s.put(escalating(&s)).await;
    // Acknowledged while its first message is still being sent.
    let row = s.claim_only("push", &root).await;
    s.outbox.acknowledge(&root, AckSource::Api).await.unwrap();
    s.complete(&row, delivered("P1")).await;
    assert_eq!(s.state(&root).await, State::Delivered);
    s.clock.advance(Duration::from_secs(3600));
    assert!(s.claim("sms", 10).await.is_empty());
}

pub async fn a_step_claimed_before_the_acknowledgement_is_sent_but_queues_no_more(s: Subject) {
    let root = s.put(escalating(&s)).await;
    deliver_root(&s, &root).await;
    s.clock.advance(Duration::from_millis(5 * MINUTE_MS as u64));
    let step1 = s.claim("sms", 10).await.remove(0);
    let acked = s.outbox.acknowledge(&root, AckSource::Api).await.unwrap();
    assert!(
        matches!(acked, Acknowledged::Done { cancelled: 0, .. }),
        "{acked:?}"
    );
    s.complete(&step1, delivered("S1")).await;
    assert_eq!(s.state(&step1.message.id).await, State::Delivered);
    s.clock.advance(Duration::from_secs(3600));
    assert!(s.claim("mail", 10).await.is_empty());
}

pub async fn a_retry_does_not_start_the_escalation(s: Subject) {
    let root = s.put(escalating(&s)).await;
    let row = s.claim_only("push", &root).await;
    s.complete(
        &row,
        Outcome::Retry {
            run_at_ms: s.now(),
            refund_attempt: false,
            code: "http_503".into(),
            error: "down".into(),
        },
    )
    .await;
    s.clock.advance(Duration::from_secs(3600));
    assert!(s.claim("sms", 10).await.is_empty());
}

pub async fn only_an_escalating_notification_can_be_acknowledged(s: Subject) {
    let plain = s.put(s.note("push")).await;
    assert_eq!(
        s.outbox.acknowledge(&plain, AckSource::Api).await.unwrap(),
        Acknowledged::NothingToAck
    );
    assert_eq!(
        s.outbox
            .acknowledge(&"no-such-id".into(), AckSource::Api)
            .await
            .unwrap(),
        Acknowledged::NotFound
    );
}
