//! Fencing: only the holder of a row's latest lease moves it on. Each case is one where the
//! attempt number alone would repeat for the same process: the stale sender's outcome must not
//! land on the later lease.

use notifyd::outbox::{
    DigestJoin, Escalation, EscalationStep, FallbackTarget, NewNotification, Outcome, State,
    Transition,
};

use super::{LEASE, Subject, completion, delivered, finish};

pub async fn a_completion_from_a_lost_lease_changes_nothing(s: Subject) {
    let id = s.put(s.note("c")).await;
    let first = s.claim_only("c", &id).await;
    s.clock.advance(LEASE);
    let second = s.claim_only("c", &id).await;

    s.complete(&first, finish(State::Failed, false)).await;
    assert_eq!(s.state(&id).await, State::Sending);

    s.complete(&second, delivered("p-2")).await;
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert_eq!(view.provider_id.as_deref(), Some("p-2"));
}

pub async fn a_stale_completion_after_a_replay_is_refused(s: Subject) {
    let id = s.put(s.note("c")).await;
    let stale = s.claim_only("c", &id).await;
    s.clock.advance(LEASE);
    let second = s.claim_only("c", &id).await;
    s.complete(&second, finish(State::Dead, false)).await;
    assert_eq!(
        s.outbox.replay(&id).await.unwrap(),
        Transition::Done(State::Queued)
    );
    let after_replay = s.claim_only("c", &id).await;
    // A fresh attempt budget: the attempt number repeats, the lease does not.
    assert_eq!(after_replay.attempt, stale.attempt);

    s.complete(&stale, delivered("stale")).await;
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Sending);
    assert_eq!(view.provider_id, None);

    s.complete(&after_replay, delivered("fresh")).await;
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert_eq!(view.provider_id.as_deref(), Some("fresh"));
}

pub async fn a_stale_completion_after_a_refunded_attempt_is_refused(s: Subject) {
    let id = s.put(s.note("c")).await;
    let refunded = s.claim_only("c", &id).await;
    let refund = Outcome::Retry {
        run_at_ms: s.now(),
        refund_attempt: true,
        code: "rate_limited".into(),
        error: "slow down".into(),
    };
    s.complete(&refunded, refund).await;
    let next = s.claim_only("c", &id).await;
    assert_eq!(next.attempt, refunded.attempt);

    // The refunded attempt's outcome written again (a retried write, a confused sender).
    s.outbox
        .complete(vec![completion(&refunded, finish(State::Failed, false))])
        .await
        .unwrap();
    assert_eq!(s.state(&id).await, State::Sending);

    s.complete(&next, delivered("p-1")).await;
    assert_eq!(s.state(&id).await, State::Delivered);
}

pub async fn a_stale_completion_after_a_failover_is_refused(s: Subject) {
    let id = s.put(s.note("a")).await;
    let stale = s.claim_only("a", &id).await;
    s.clock.advance(LEASE);
    let second = s.claim_only("a", &id).await;
    s.complete(
        &second,
        Outcome::Reroute {
            channel: "b".into(),
            code: "failed_over".into(),
            error: "a is down".into(),
        },
    )
    .await;
    let on_b = s.claim_only("b", &id).await;
    assert_eq!(on_b.attempt, stale.attempt);

    s.complete(&stale, finish(State::Failed, false)).await;
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!((view.state, view.channel.as_str()), (State::Sending, "b"));
}

/// A notification with one escalation step to `sms`, due a minute after it ends.
fn escalating(s: &Subject) -> NewNotification {
    NewNotification {
        escalation: Escalation {
            steps: vec![EscalationStep {
                after_ms: 60_000,
                target: FallbackTarget {
                    channel: "sms".into(),
                    to: "+15550001".into(),
                },
                content: None,
            }],
            root: None,
        },
        ..s.note("c")
    }
}

pub async fn a_stale_completion_of_an_escalating_notification_queues_no_step(s: Subject) {
    let id = s.put(escalating(&s)).await;
    let stale = s.claim_only("c", &id).await;
    s.clock.advance(LEASE);
    let second = s.claim_only("c", &id).await;

    s.complete(&stale, finish(State::Failed, false)).await;
    assert_eq!(s.state(&id).await, State::Sending);
    assert!(
        s.claim("sms", 10).await.is_empty(),
        "no step from a lost lease"
    );

    // The lease's holder ends it: its step is due at once.
    s.complete(&second, finish(State::Failed, false)).await;
    assert_eq!(s.state(&id).await, State::Failed);
    assert_eq!(s.claim("sms", 10).await.len(), 1);
}

pub async fn a_stale_completion_of_a_digest_ends_none_of_its_items(s: Subject) {
    let item = s
        .put(NewNotification {
            digest: Some(DigestJoin {
                key: "daily".into(),
                until_ms: s.now(),
                max: 10,
                vars: None,
            }),
            ..s.note("c")
        })
        .await;
    let digest: String = s
        .outbox
        .get(&item)
        .await
        .unwrap()
        .unwrap()
        .digest_id
        .expect("collected into a digest")
        .into();
    let stale = s.claim_only("c", &digest).await;
    s.clock.advance(LEASE);
    let second = s.claim_only("c", &digest).await;

    s.complete(&stale, finish(State::Failed, false)).await;
    assert_eq!(s.state(&digest).await, State::Sending);
    assert_eq!(s.state(&item).await, State::Queued);

    s.complete(&second, delivered("d-2")).await;
    assert_eq!(s.state(&digest).await, State::Delivered);
    assert_eq!(s.state(&item).await, State::Delivered);
}
