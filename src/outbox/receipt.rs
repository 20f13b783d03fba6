//! What a verified delivery receipt does to the notification it matches.

use crate::model::{ReceiptStatus, State};

/// The state a receipt may change, and the one it changes it to: a provider that accepted a
/// message (`delivered` for us) and then could not hand it over makes it `failed`.
pub(crate) const RECEIPT_FAILS: (State, State) = (State::Delivered, State::Failed);

/// The last code and error a receipt writes when it fails a delivered notification, or `None`
/// when it changes nothing (delivered, in progress): the provider's error code (else
/// `undelivered`) and the provider's own word for the status.
pub(crate) fn receipt_failure(
    status: ReceiptStatus,
    provider_status: &str,
    error_code: Option<&str>,
) -> Option<(String, String)> {
    (status == ReceiptStatus::Failed).then(|| {
        (
            error_code.unwrap_or("undelivered").to_owned(),
            format!("the provider reported the message {provider_status}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_receipt_fails_with_the_providers_code_and_word() {
        assert_eq!(
            receipt_failure(ReceiptStatus::Failed, "undelivered", Some("30003")),
            Some((
                "30003".to_owned(),
                "the provider reported the message undelivered".to_owned()
            ))
        );
    }

    #[test]
    fn a_failed_receipt_without_a_code_says_undelivered() {
        let (code, _) = receipt_failure(ReceiptStatus::Failed, "failed", None).unwrap();
        assert_eq!(code, "undelivered");
    }

    #[test]
    fn delivered_and_in_progress_receipts_change_nothing() {
        assert_eq!(
            receipt_failure(ReceiptStatus::Delivered, "read", None),
            None
        );
        assert_eq!(
            receipt_failure(ReceiptStatus::InProgress, "sent", None),
            None
        );
    }
}
