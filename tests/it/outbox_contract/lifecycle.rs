//! Completions, attempt history, cancel, dead letters and replay.

use std::time::Duration;

use notifyd::outbox::{AttemptRecord, ChannelName, Completion, Depth, Outcome, State, Transition};

use super::{Subject, delivered, finish};

pub async fn a_delivery_records_the_provider_id_and_clears_the_last_error(s: Subject) {
    let id = s.put(s.note("c")).await;
    let first = s.claim_only("c", &id).await;
    let retry = Outcome::Retry {
        run_at_ms: s.now(),
        refund_attempt: false,
        code: "http_503".into(),
        error: "down".into(),
    };
    s.complete(&first, retry).await;
    let second = s.claim_only("c", &id).await;
    s.complete(&second, delivered("SM1")).await;

    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Delivered);
    assert_eq!(view.provider_id.as_deref(), Some("SM1"));
    assert_eq!(view.attempts, 2);
    assert_eq!((view.last_code, view.last_error), (None, None));
}

pub async fn a_retry_waits_for_its_time_and_a_refund_keeps_the_attempt_count(s: Subject) {
    let id = s.put(s.note("c")).await;
    let row = s.claim_only("c", &id).await;
    let retry = Outcome::Retry {
        run_at_ms: s.now() + 60_000,
        refund_attempt: true,
        code: "rate_limited".into(),
        error: "slow down".into(),
    };
    s.complete(&row, retry).await;

    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Queued);
    assert_eq!(view.attempts, 0);
    assert_eq!(view.run_at_ms, s.now() + 60_000);
    assert_eq!(view.last_code.as_deref(), Some("rate_limited"));
    assert!(s.claim("c", 10).await.is_empty());
    s.clock.advance(Duration::from_secs(60));
    assert_eq!(s.claim_only("c", &id).await.attempt, 1);
}

pub async fn a_release_puts_it_back_due_now_without_spending_the_attempt(s: Subject) {
    let id = s.put(s.note("c")).await;
    let row = s.claim_only("c", &id).await;
    s.complete(&row, Outcome::Release).await;
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!((view.state, view.attempts), (State::Queued, 0));
    assert_eq!(view.run_at_ms, s.now());
    assert_eq!(s.claim_only("c", &id).await.attempt, 1);
}

pub async fn attempts_are_recorded_in_order_with_their_channel(s: Subject) {
    let id = s.put(s.note("c")).await;
    let record = |started_at_ms, outcome: &str, decision: &str| AttemptRecord {
        started_at_ms,
        latency_ms: 12,
        outcome: outcome.into(),
        code: None,
        error: None,
        provider_id: None,
        decision: decision.into(),
        channel: "c".into(),
    };
    let first = s.claim_only("c", &id).await;
    s.outbox
        .complete(vec![Completion {
            events: Vec::new(),
            id: id.clone(),
            attempt: first.attempt,
            lease: first.lease,
            outcome: Outcome::Retry {
                run_at_ms: s.now(),
                refund_attempt: false,
                code: "http_503".into(),
                error: "down".into(),
            },
            record: Some(record(10, "transient", "retry")),
        }])
        .await
        .unwrap();
    let second = s.claim_only("c", &id).await;
    s.outbox
        .complete(vec![Completion {
            events: Vec::new(),
            id: id.clone(),
            attempt: second.attempt,
            lease: second.lease,
            outcome: delivered("SM1"),
            record: Some(record(20, "delivered", "delivered")),
        }])
        .await
        .unwrap();

    let view = s.outbox.get(&id).await.unwrap().unwrap();
    let log: Vec<(u32, i64, &str, &str, Option<&str>)> = view
        .attempt_log
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.started_at_ms,
                a.outcome.as_str(),
                a.decision.as_str(),
                a.channel.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        log,
        vec![
            (1, 10, "transient", "retry", Some("c")),
            (2, 20, "delivered", "delivered", Some("c"))
        ]
    );
}

pub async fn cancel_ends_a_queued_notification(s: Subject) {
    let id = s.put(s.note("c")).await;
    assert_eq!(
        s.outbox.cancel(&id).await.unwrap(),
        Transition::Done(State::Cancelled)
    );
    assert_eq!(s.state(&id).await, State::Cancelled);
    assert!(s.claim("c", 10).await.is_empty());
}

pub async fn cancel_is_refused_once_leased_and_an_unknown_id_is_not_found(s: Subject) {
    let id = s.put(s.note("c")).await;
    s.claim_only("c", &id).await;
    assert_eq!(
        s.outbox.cancel(&id).await.unwrap(),
        Transition::Refused(State::Sending)
    );
    assert_eq!(s.state(&id).await, State::Sending);
    assert_eq!(
        s.outbox.cancel(&"no-such-id".into()).await.unwrap(),
        Transition::NotFound
    );
}

pub async fn a_dead_letter_is_listed_and_replay_requeues_it_with_a_fresh_budget(s: Subject) {
    let id = s.put(s.note("c")).await;
    let first = s.claim_only("c", &id).await;
    s.complete(&first, finish(State::Dead, false)).await;

    let dead = s.outbox.dead_letters(Some(&"c".into()), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].last_code.as_deref(), Some("http_503"));
    assert_eq!(dead[0].died_at_ms, s.now());
    assert!(
        s.outbox
            .dead_letters(Some(&"other".into()), 10)
            .await
            .unwrap()
            .is_empty()
    );

    s.clock.advance(Duration::from_secs(5));
    assert_eq!(
        s.outbox.replay(&id).await.unwrap(),
        Transition::Done(State::Queued)
    );
    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!((view.attempts, view.run_at_ms), (0, s.now()));
    assert!(s.outbox.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(s.claim_only("c", &id).await.attempt, 1);
}

pub async fn replaying_a_channel_requeues_each_of_its_dead_letters_and_no_other(s: Subject) {
    let mut dead = Vec::new();
    for channel in ["c", "c", "other"] {
        let id = s.put(s.note(channel)).await;
        let row = s.claim_only(channel, &id).await;
        s.complete(&row, finish(State::Dead, false)).await;
        dead.push(id);
    }
    assert_eq!(s.outbox.replay_channel(&"c".into()).await.unwrap(), 2);
    assert_eq!(s.state(&dead[0]).await, State::Queued);
    assert_eq!(s.state(&dead[1]).await, State::Queued);
    assert_eq!(s.state(&dead[2]).await, State::Dead);
    assert_eq!(s.outbox.replay_channel(&"c".into()).await.unwrap(), 0);
}

pub async fn replay_is_refused_for_a_notification_that_is_not_dead(s: Subject) {
    let id = s.put(s.note("c")).await;
    assert_eq!(
        s.outbox.replay(&id).await.unwrap(),
        Transition::Refused(State::Queued)
    );
    assert_eq!(
        s.outbox.replay(&"no-such-id".into()).await.unwrap(),
        Transition::NotFound
    );
}

pub async fn depth_counts_live_and_dead_notifications_per_channel(s: Subject) {
    s.put(s.note("a")).await;
    s.put(s.note("a")).await;
    let leased = s.put(s.note("b")).await;
    s.claim_only("b", &leased).await;
    let dead = s.put(s.note("b")).await;
    let dead_row = s.claim_only("b", &dead).await;
    s.complete(&dead_row, finish(State::Dead, false)).await;
    let cancelled = s.put(s.note("a")).await;
    s.outbox.cancel(&cancelled).await.unwrap();

    let mut depth: Vec<(ChannelName, State, u64)> = s
        .outbox
        .depth()
        .await
        .unwrap()
        .into_iter()
        .map(
            |Depth {
                 channel,
                 state,
                 count,
             }| (channel, state, count),
        )
        .collect();
    depth.sort_by(|x, y| (&x.0, x.1.as_str()).cmp(&(&y.0, y.1.as_str())));
    assert_eq!(
        depth,
        vec![
            ("a".into(), State::Queued, 2),
            ("b".into(), State::Dead, 1),
            ("b".into(), State::Sending, 1),
        ]
    );
}
