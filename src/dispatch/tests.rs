//! The claim loop and the send path on paused tokio time, without a network: a scripted
//! [`Channel`] and an in-memory [`Outbox`] that records every claim, move and completion.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use notifyd_channels::{Channel, FieldError, Message, Timeouts};

use super::*;
use crate::config::{BreakerConfig, ChannelPolicy, Config, Rate, RateLimitConfig};
use crate::outbox::{
    AckSource, Acknowledged, ChannelName, ClaimedPreferences, Content, DeadLetter, Depth, Enqueued,
    HistoryPage, HistoryQuery, InboundReceipt, KeyHolder, LeaseToken, NewNotification,
    NotificationId, NotificationView, Outcome, RecordedReceipt, Result, StoreError, SweepReport,
    Transition, Validation,
};
use crate::recipients::Preferences;
use crate::systemd::Notifier;

/// What the scripted provider answers, and after how long.
#[derive(Clone)]
struct Answer {
    after: Duration,
    result: std::result::Result<Receipt, DeliveryError>,
}

fn ok() -> Answer {
    Answer {
        after: Duration::from_millis(10),
        result: Ok(Receipt { provider_id: None }),
    }
}

fn unavailable() -> Answer {
    Answer {
        after: Duration::from_millis(10),
        result: Err(DeliveryError::transient("http_503", "unavailable")),
    }
}

fn slow(after: Duration) -> Answer {
    Answer { after, ..ok() }
}

/// A provider that answers from a script (then `ok`), and notes when each call started.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<(Instant, String)>>,
}

impl Scripted {
    fn answering(script: impl IntoIterator<Item = Answer>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into_iter().collect()),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<(Instant, String)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Channel for Scripted {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn validate(&self, _: &Message) -> std::result::Result<(), FieldError> {
        Ok(())
    }

    async fn send(
        &self,
        msg: &Message,
        _: &SendContext,
    ) -> std::result::Result<Receipt, DeliveryError> {
        self.calls
            .lock()
            .unwrap()
            .push((clock::now(), msg.id.clone()));
        let answer = self.script.lock().unwrap().pop_front().unwrap_or_else(ok);
        tokio::time::sleep(answer.after).await;
        answer.result
    }
}

/// Rows to hand out, and everything the dispatcher did with them.
#[derive(Default)]
struct Queue {
    rows: VecDeque<Claimed>,
    /// When each claim was made and how many rows it returned.
    claims: Vec<(Instant, usize)>,
    completions: Vec<Completion>,
    /// How many completions each write carried.
    writes: Vec<usize>,
    /// Refuse writes of more than one completion (a bad row in a batch).
    refuse_batches: bool,
    deferred: Vec<i64>,
}

/// An in-memory outbox: claims take rows in order, completions are recorded (a row released
/// or retried is not handed out again).
#[derive(Default)]
struct Memory {
    queue: Mutex<Queue>,
    changed: tokio::sync::Notify,
    /// Writes wait while a test holds this for writing.
    writes_paused: tokio::sync::RwLock<()>,
}

impl Memory {
    fn with_rows(n: usize) -> Arc<Self> {
        let memory = Self::default();
        for i in 0..n {
            memory
                .queue
                .lock()
                .unwrap()
                .rows
                .push_back(row(&format!("n{i}")));
        }
        Arc::new(memory)
    }

    fn completions(&self) -> Vec<Completion> {
        self.queue.lock().unwrap().completions.clone()
    }

    fn claims(&self) -> Vec<(Instant, usize)> {
        self.queue.lock().unwrap().claims.clone()
    }

    /// Waits (in virtual time) until `n` completions were written.
    async fn completed(&self, n: usize) -> Vec<Completion> {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.queue.lock().unwrap().completions.len() >= n {
                    return self.completions();
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), wait)
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} completions: {:?}", self.completions()))
    }
}

fn row(id: &str) -> Claimed {
    Claimed {
        message: Message {
            list_unsubscribe: None,
            id: id.into(),
            channel: "c".into(),
            to: "alice".into(),
            subject: None,
            body: Some("hi".into()),
            html: None,
            data: None,
            created_at: clock::system_time(clock::now_ms()),
        },
        attempt: 0,
        lease: LeaseToken(1),
        expires_at_ms: None,
        tried: Vec::new(),
        validation: Validation::Done,
        priority: crate::outbox::Priority::Normal,
        deliver_between: None,
        digest_key: None,
        preferences: crate::outbox::ClaimedPreferences::NotRead,
    }
}

#[async_trait]
impl Outbox for Memory {
    async fn enqueue(&self, _: Vec<NewNotification>) -> Result<Vec<Enqueued>> {
        unimplemented!("the dispatcher does not enqueue")
    }
    async fn find_key(&self, _: &str) -> Result<Option<KeyHolder>> {
        unimplemented!("the dispatcher does not look up keys")
    }
    async fn claim(&self, _: &ChannelName, limit: usize, _: Duration) -> Result<Vec<Claimed>> {
        let mut q = self.queue.lock().unwrap();
        let n = limit.min(q.rows.len());
        let rows: Vec<Claimed> = q
            .rows
            .drain(..n)
            .map(|mut r| {
                r.attempt += 1;
                r
            })
            .collect();
        q.claims.push((clock::now(), rows.len()));
        Ok(rows)
    }
    async fn complete(&self, completions: Vec<Completion>) -> Result<()> {
        let _go = self.writes_paused.read().await;
        let mut q = self.queue.lock().unwrap();
        if q.refuse_batches && completions.len() > 1 {
            return Err(StoreError::Internal("a bad row".into()));
        }
        q.writes.push(completions.len());
        q.completions.extend(completions);
        drop(q);
        self.changed.notify_waiters();
        Ok(())
    }
    async fn get(&self, _: &NotificationId) -> Result<Option<NotificationView>> {
        unimplemented!("the dispatcher does not read notifications")
    }
    async fn cancel(&self, _: &NotificationId) -> Result<Transition> {
        unimplemented!("the dispatcher does not cancel")
    }
    async fn dead_letters(&self, _: Option<&ChannelName>, _: usize) -> Result<Vec<DeadLetter>> {
        unimplemented!("the dispatcher does not list dead letters")
    }
    async fn replay(&self, _: &NotificationId) -> Result<Transition> {
        unimplemented!("the dispatcher does not replay")
    }
    async fn history(&self, _: &HistoryQuery) -> Result<HistoryPage> {
        unimplemented!("the dispatcher does not search the history")
    }
    async fn content(&self, _: &NotificationId) -> Result<Option<Content>> {
        unimplemented!("the dispatcher does not read content")
    }
    async fn depth(&self) -> Result<Vec<Depth>> {
        Ok(Vec::new())
    }
    async fn oldest_due(&self, _: &[ChannelName]) -> Result<Vec<(ChannelName, i64)>> {
        Ok(Vec::new())
    }
    async fn move_due(&self, _: &ChannelName, how: OpenBreakerMove, _: usize) -> Result<u64> {
        if let OpenBreakerMove::Defer { until_ms } = how {
            self.queue.lock().unwrap().deferred.push(until_ms);
        }
        // The rows stay claimable: the test decides when they are due by when it looks.
        Ok(0)
    }
    async fn sweep(&self, _: &[ChannelName], _: &Retention) -> Result<SweepReport> {
        Ok(SweepReport::default())
    }
    async fn record_receipt(&self, _: InboundReceipt) -> Result<RecordedReceipt> {
        unimplemented!("the dispatcher does not record receipts")
    }
    async fn check_writable(&self) -> Result<()> {
        Ok(())
    }
    async fn put_preferences(&self, _: &str, _: &Preferences) -> Result<()> {
        unimplemented!("the dispatcher does not write preferences")
    }
    async fn preferences(&self, _: &[String]) -> Result<Vec<(String, Preferences)>> {
        Ok(Vec::new())
    }
    async fn delete_preferences(&self, _: &str) -> Result<bool> {
        unimplemented!("the dispatcher does not delete preferences")
    }
    async fn opt_out(
        &self,
        _: &str,
        _: &ChannelName,
        _: Option<crate::outbox::RuleEvent>,
    ) -> Result<Preferences> {
        unimplemented!("the dispatcher does not opt out")
    }
    async fn record_events(&self, _: Vec<crate::outbox::RuleEvent>) -> Result<()> {
        unimplemented!("no rule runs in these tests")
    }
    async fn acknowledge(&self, _: &NotificationId, _: AckSource) -> Result<Acknowledged> {
        unimplemented!("the dispatcher does not acknowledge")
    }
}

fn policy(concurrency: usize) -> ChannelPolicy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifyd.toml");
    std::fs::write(&path, "[channels.c]\nkind = \"log\"\n").unwrap();
    let config = Config::load_with_env(
        Some(&path),
        figment::providers::Env::prefixed("NOTIFYD_UNIT_UNUSED_"),
    )
    .unwrap();
    let mut p = config.channels["c"].policy.clone();
    p.concurrency = concurrency;
    p
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(10),
        total: Duration::from_secs(10),
    }
}

/// A running dispatcher over one channel `c`.
struct Running {
    rt: Arc<ChannelRuntime>,
    halt: watch::Sender<Halt>,
    done: tokio::task::JoinHandle<()>,
}

fn start(policy: ChannelPolicy, channel: Arc<Scripted>, outbox: Arc<Memory>) -> Running {
    start_reading(policy, channel, outbox, crate::outbox::Clock::System)
}

/// [`start`] with the delivery rules reading the wall time from `wall`.
fn start_reading(
    policy: ChannelPolicy,
    channel: Arc<Scripted>,
    outbox: Arc<Memory>,
    wall: crate::outbox::Clock,
) -> Running {
    let registry = Arc::new(Registry::of([ChannelRuntime::new(
        "c",
        channel,
        policy,
        timeouts(),
    )]));
    let rt = registry.get(&"c".into()).unwrap().clone();
    let config = DispatcherConfig {
        shutdown_grace: Duration::from_secs(2),
        ..DispatcherConfig::default()
    };
    let retention = Retention {
        finished_ms: 0,
        unmatched_receipts_ms: 0,
    };
    let dispatcher = Dispatcher::new(
        outbox,
        registry,
        config,
        retention,
        Notifier::new(None, None),
    )
    .reading_wall_time_from(wall);
    let (halt, watch) = watch::channel(Halt::Running);
    let done = tokio::spawn(dispatcher.run(watch));
    Running { rt, halt, done }
}

fn decisions(completions: &[Completion]) -> Vec<String> {
    completions
        .iter()
        .map(|c| match (&c.record, &c.outcome) {
            (Some(r), _) => r.decision.clone(),
            (None, Outcome::Release) => "released".into(),
            (None, other) => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn claimed_rows_are_sent_and_their_deliveries_committed() {
    let outbox = Memory::with_rows(5);
    let channel = Scripted::answering([]);
    let run = start(policy(4), channel.clone(), outbox.clone());
    let done = outbox.completed(5).await;
    assert_eq!(decisions(&done), vec!["delivered"; 5]);
    assert_eq!(channel.calls().len(), 5);
    // All five in one claim: the lease budget is twice the bulkhead.
    assert_eq!(outbox.claims()[0].1, 5);
    assert_eq!(
        run.rt
            .stats
            .count(crate::channel_stats::AttemptClass::Delivered),
        5
    );
    assert_eq!(run.rt.health().delivered, 5);
}

#[tokio::test(start_paused = true)]
async fn a_recipient_the_claim_found_opted_out_is_not_sent() {
    // The in-memory store has no preferences: only the claim's say this recipient opted out.
    let outbox = Arc::new(Memory::default());
    outbox.queue.lock().unwrap().rows.push_back(Claimed {
        preferences: ClaimedPreferences::Read(Some(Preferences {
            opted_out: vec!["c".into()],
            ..Preferences::default()
        })),
        ..row("n0")
    });
    let channel = Scripted::answering([]);
    let _run = start(policy(1), channel.clone(), outbox.clone());
    let done = outbox.completed(1).await;
    assert_eq!(channel.calls().len(), 0);
    let Outcome::Finish { state, code, .. } = &done[0].outcome else {
        panic!("not ended: {:?}", done[0].outcome);
    };
    assert_eq!((*state, code.as_str()), (State::Failed, "opted_out"));
}

#[tokio::test(start_paused = true)]
async fn no_more_than_the_bulkhead_is_sent_at_once() {
    let outbox = Memory::with_rows(6);
    let channel = Scripted::answering((0..6).map(|_| slow(Duration::from_secs(1))));
    let run = start(policy(2), channel.clone(), outbox.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(channel.calls().len(), 2);
    assert_eq!(run.rt.in_flight(), 2);
    outbox.completed(6).await;
    let starts: Vec<Instant> = channel.calls().iter().map(|c| c.0).collect();
    // Three waves of two, one second apart.
    assert_eq!(starts[2] - starts[0], Duration::from_secs(1));
    assert_eq!(starts[4] - starts[0], Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn an_outage_opens_the_breaker_and_the_queue_waits_for_one_probe() {
    let mut p = policy(1);
    p.breaker = BreakerConfig {
        enabled: true,
        consecutive_failures: 2,
        probes: 1,
        open_for: Duration::from_secs(30),
        ..BreakerConfig::default()
    };
    let outbox = Memory::with_rows(6);
    let channel = Scripted::answering([unavailable(), unavailable()]);
    let run = start(p, channel.clone(), outbox.clone());
    // The row claimed ahead while the breaker was still closed goes back unsent.
    let done = outbox.completed(3).await;
    assert_eq!(decisions(&done)[..3], ["retry", "retry", "released"]);
    // The second failure (answered 10 ms after it was sent) opened it.
    let opened = channel.calls()[1].0 + Duration::from_millis(10);
    // While open: nothing is sent, due rows are deferred to the probe time.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(channel.calls().len(), 2);
    let deferred = outbox.queue.lock().unwrap().deferred.clone();
    assert!(!deferred.is_empty());
    assert!(
        deferred.iter().all(|t| *t >= clock::now_ms()),
        "{deferred:?}"
    );
    assert_eq!(run.rt.gate.breaker().view().state, "open");
    // The probe goes alone; its success closes the breaker and the rest follow.
    let done = outbox.completed(6).await;
    let calls = channel.calls();
    assert!(
        calls[2].0 - opened >= Duration::from_secs(30),
        "no call before the probe time"
    );
    assert_eq!(
        decisions(&done)[3..],
        ["delivered", "delivered", "delivered"]
    );
    let claims_after_open: Vec<usize> = outbox
        .claims()
        .iter()
        .filter(|(at, _)| *at >= opened + Duration::from_secs(30))
        .map(|c| c.1)
        .collect();
    assert_eq!(claims_after_open[0], 1, "one probe: {claims_after_open:?}");
    assert_eq!(run.rt.gate.breaker().view().state, "closed");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_waits_for_the_next_probe_without_spending_an_attempt() {
    let mut p = policy(1);
    p.breaker = BreakerConfig {
        enabled: true,
        consecutive_failures: 1,
        probes: 1,
        open_for: Duration::from_secs(30),
        ..BreakerConfig::default()
    };
    let outbox = Memory::with_rows(3);
    let channel = Scripted::answering([unavailable(), unavailable()]);
    let _run = start(p, channel.clone(), outbox.clone());
    // First failure opens it; the row claimed ahead goes back; the probe fails too.
    let done = outbox.completed(3).await;
    assert_eq!(decisions(&done), vec!["retry", "released", "probe_failed"]);
    let failed_at = clock::now_ms();
    match &done[2].outcome {
        Outcome::Retry {
            run_at_ms,
            refund_attempt,
            ..
        } => {
            assert!(refund_attempt);
            // The breaker re-opened for twice as long: the row waits for that probe.
            assert!((failed_at + 59_000..=failed_at + 60_000).contains(run_at_ms));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_channel_sends_at_its_pace() {
    let mut p = policy(8);
    p.rate_limit = Some(RateLimitConfig {
        channel: Rate {
            per_second: Some(10.0),
            per_minute: None,
            burst: 1,
        },
        per_recipient: None,
    });
    let outbox = Memory::with_rows(5);
    let channel = Scripted::answering([]);
    let _run = start(p, channel.clone(), outbox.clone());
    outbox.completed(5).await;
    let starts: Vec<Instant> = channel.calls().iter().map(|c| c.0).collect();
    for pair in starts.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_millis(100));
    }
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_hold_the_channel_and_nothing_is_claimed_meanwhile() {
    let outbox = Memory::with_rows(3);
    let fault = Answer {
        after: Duration::from_millis(10),
        result: Err(DeliveryError::ChannelFault {
            code: "http_401".into(),
            reason: "bad token".into(),
        }),
    };
    let channel = Scripted::answering([fault]);
    let run = start(policy(1), channel.clone(), outbox.clone());
    let done = outbox.completed(2).await;
    let held_at = clock::now();
    assert_eq!(decisions(&done), vec!["held", "released"]);
    assert!(run.rt.health().held_until_ms.is_some());
    // The fault hold is 30 s by default.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(channel.calls().len(), 1);
    assert!(outbox.claims().iter().all(|(at, _)| *at <= held_at));
    outbox.completed(3).await;
    assert!(channel.calls()[1].0 - held_at >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn on_stop_sends_in_flight_finish_and_rows_claimed_ahead_go_back_unsent() {
    let outbox = Memory::with_rows(2);
    let channel = Scripted::answering([slow(Duration::from_secs(1))]);
    let run = start(policy(1), channel.clone(), outbox.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(channel.calls().len(), 1);
    run.halt.send(Halt::Shutdown).unwrap();
    run.done.await.unwrap();
    let mut done = decisions(&outbox.completions());
    done.sort();
    assert_eq!(done, vec!["delivered", "released"]);
    assert_eq!(channel.calls().len(), 1);
    assert_eq!(run.rt.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_send_still_running_after_the_grace_period_is_abandoned_and_released() {
    let outbox = Memory::with_rows(1);
    let channel = Scripted::answering([slow(Duration::from_secs(9))]);
    let run = start(policy(1), channel.clone(), outbox.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.halt.send(Halt::Shutdown).unwrap();
    run.done.await.unwrap();
    assert_eq!(decisions(&outbox.completions()), vec!["released"]);
}

#[tokio::test(start_paused = true)]
async fn outcomes_that_finish_together_are_written_together() {
    let outbox = Memory::with_rows(50);
    let channel = Scripted::answering([]);
    let _run = start(policy(64), channel.clone(), outbox.clone());
    outbox.completed(50).await;
    let writes = outbox.queue.lock().unwrap().writes.clone();
    assert!(writes.len() < 50, "{writes:?}");
    assert_eq!(writes.iter().sum::<usize>(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_batch_the_store_refuses_is_written_one_outcome_at_a_time() {
    let outbox = Memory::with_rows(20);
    outbox.queue.lock().unwrap().refuse_batches = true;
    let channel = Scripted::answering([]);
    let run = start(policy(64), channel.clone(), outbox.clone());
    let done = outbox.completed(20).await;
    assert_eq!(decisions(&done), vec!["delivered"; 20]);
    assert!(outbox.queue.lock().unwrap().writes.iter().all(|n| *n == 1));
    run.halt.send(Halt::Shutdown).unwrap();
    run.done.await.unwrap();
    assert_eq!(run.rt.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_rows_slot_is_held_until_its_outcome_is_written() {
    let outbox = Memory::with_rows(1);
    let channel = Scripted::answering([]);
    let run = start(policy(1), channel.clone(), outbox.clone());
    let paused = outbox.writes_paused.write().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(channel.calls().len(), 1);
    assert_eq!(
        run.rt.in_flight(),
        1,
        "the send is over, its outcome is not written"
    );
    drop(paused);
    outbox.completed(1).await;
    tokio::task::yield_now().await;
    assert_eq!(run.rt.in_flight(), 0);
}

/// The channel's quiet hours hold a row until 07:00 local on the night the clocks change, in
/// two zones (Paris springs forward, New York falls back), read on an injected wall clock: the
/// row goes back to the queue with its attempt refunded and a `quiet_hours` event, unsent.
#[tokio::test(start_paused = true)]
async fn quiet_hours_hold_a_row_until_seven_local_across_a_dst_change_in_two_zones() {
    let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    for (zone, now, seven) in [
        (
            "Europe/Paris",
            "2026-03-28T23:30:00Z",
            "2026-03-29T05:00:00Z",
        ),
        (
            "America/New_York",
            "2026-11-01T06:30:00Z",
            "2026-11-01T12:00:00Z",
        ),
    ] {
        let mut p = policy(2);
        p.quiet_hours = Some(crate::config::QuietHoursConfig {
            start: Some("22:00".into()),
            end: Some("07:00".into()),
            time_zone: zone.into(),
            high_priority_passes: true,
        });
        let outbox = Memory::with_rows(1);
        let channel = Scripted::answering([]);
        let wall = crate::outbox::ManualClock::starting_at(ms(now));
        let run = start_reading(
            p,
            channel.clone(),
            outbox.clone(),
            crate::outbox::Clock::Manual(wall),
        );
        let done = outbox.completed(1).await;
        match &done[0].outcome {
            Outcome::Retry {
                run_at_ms,
                refund_attempt,
                code,
                ..
            } => {
                assert_eq!(*run_at_ms, ms(seven), "{zone}");
                assert!(*refund_attempt, "{zone}: no attempt spent");
                assert_eq!(code, "quiet_hours");
            }
            other => panic!("{zone}: {other:?}"),
        }
        assert_eq!(done[0].record, None, "{zone}: never sent");
        assert_eq!(done[0].events[0].rule, crate::outbox::Rule::QuietHours);
        assert!(channel.calls().is_empty(), "{zone}");
        run.halt.send(Halt::Shutdown).unwrap();
        run.done.await.unwrap();
    }
}

#[test]
fn claims_that_keep_failing_wait_longer_each_time_up_to_a_bound() {
    let poll = Duration::from_millis(100);
    let waits: Vec<u128> = (1..=8)
        .map(|n| claim_backoff(poll, n).as_millis())
        .collect();
    assert_eq!(waits, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    assert_eq!(claim_backoff(poll, u32::MAX), MAX_CLAIM_BACKOFF);
    // A poll interval longer than the bound is never shortened.
    let slow = Duration::from_secs(30);
    assert_eq!(claim_backoff(slow, 3), slow);
}
