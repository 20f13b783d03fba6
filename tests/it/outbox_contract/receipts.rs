//! Delivery receipts: matched by channel and provider id, early or late, stored once.

use notifyd::outbox::{InboundReceipt, NotificationId, ReceiptStatus, RecordedReceipt, State};

use super::{Subject, delivered};

fn receipt(channel: &str, provider_id: &str, status: ReceiptStatus, word: &str) -> InboundReceipt {
    InboundReceipt {
        channel: channel.into(),
        provider_id: provider_id.into(),
        status,
        provider_status: word.into(),
        error_code: (status == ReceiptStatus::Failed).then(|| "30003".to_owned()),
    }
}

/// A notification on `channel` delivered with `provider_id`.
async fn delivered_on(s: &Subject, channel: &str, provider_id: &str) -> NotificationId {
    let id = s.put(s.note(channel)).await;
    let row = s.claim_only(channel, &id).await;
    s.complete(&row, delivered(provider_id)).await;
    id
}

pub async fn a_late_receipt_is_attached_and_a_failure_fails_the_notification(s: Subject) {
    let id = delivered_on(&s, "sms", "SM1").await;
    let sent = s
        .outbox
        .record_receipt(receipt("sms", "SM1", ReceiptStatus::InProgress, "sent"))
        .await
        .unwrap();
    assert_eq!(
        sent,
        RecordedReceipt {
            notification_id: Some(id.clone()),
            duplicate: false
        }
    );
    assert_eq!(s.state(&id).await, State::Delivered);

    s.outbox
        .record_receipt(receipt("sms", "SM1", ReceiptStatus::Failed, "undelivered"))
        .await
        .unwrap();
    let view = s.outbox.get(&id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(view.state, State::Failed);
    assert_eq!(view.last_code.as_deref(), Some("30003"));
    let words: Vec<&str> = view
        .receipts
        .iter()
        .map(|r| r.provider_status.as_str())
        .collect();
    assert_eq!(words, vec!["sent", "undelivered"]);
    assert_eq!(view.receipts[0].received_at_ms, s.now());
}

pub async fn an_early_receipt_is_applied_when_the_provider_id_is_recorded(s: Subject) {
    let id = s.put(s.note("sms")).await;
    let row = s.claim_only("sms", &id).await;
    // The provider's callback beats our own write of its id.
    let early = s
        .outbox
        .record_receipt(receipt("sms", "SM9", ReceiptStatus::Failed, "undelivered"))
        .await
        .unwrap();
    assert_eq!(
        early,
        RecordedReceipt {
            notification_id: None,
            duplicate: false
        }
    );
    s.complete(&row, delivered("SM9")).await;

    let view = s.outbox.get(&id).await.unwrap().unwrap();
    assert_eq!(view.state, State::Failed);
    assert_eq!(view.provider_id.as_deref(), Some("SM9"));
    assert_eq!(view.receipts.len(), 1);
    assert_eq!(view.receipts[0].status, "failed");
}

pub async fn a_replayed_receipt_is_stored_once(s: Subject) {
    let id = delivered_on(&s, "sms", "SM1").await;
    let r = receipt("sms", "SM1", ReceiptStatus::Delivered, "delivered");
    let first = s.outbox.record_receipt(r.clone()).await.unwrap();
    let again = s.outbox.record_receipt(r).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        again,
        RecordedReceipt {
            notification_id: Some(id.clone()),
            duplicate: true
        }
    );
    let view = s.outbox.get(&id.as_str().into()).await.unwrap().unwrap();
    assert_eq!((view.state, view.receipts.len()), (State::Delivered, 1));
}

pub async fn a_receipt_never_matches_a_notification_of_another_channel(s: Subject) {
    let on_b = delivered_on(&s, "b", "X-1").await;
    let from_a = s
        .outbox
        .record_receipt(receipt("a", "X-1", ReceiptStatus::Failed, "undelivered"))
        .await
        .unwrap();
    assert_eq!(from_a.notification_id, None);
    let view = s.outbox.get(&on_b.as_str().into()).await.unwrap().unwrap();
    assert_eq!((view.state, view.receipts.len()), (State::Delivered, 0));
}
