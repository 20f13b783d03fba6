//! Signed links: the tokens in the URLs notifyd puts in the messages it sends (acknowledge an
//! escalating notification, unsubscribe from a channel), so a click is believed without a login.
//!
//! A token names what it may do (`Purpose`), the notification it is about (never a recipient, so
//! no personal data travels in a URL; the handler reads recipient and channel from the store)
//! and when it stops working, and carries an HMAC-SHA256 over all three under the daemon's link
//! key. Pure: no clock, no store — the caller passes the time and keeps "one use" itself.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key links are signed with (`[links] secret`). Every daemon sharing a queue needs the
/// same key, so a link made by one is accepted by all.
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl LinkKey {
    /// A key of at least 16 bytes; a shorter one is refused, since links are guessable otherwise.
    pub fn new(bytes: &[u8]) -> Result<Self, LinkError> {
        if bytes.len() < 16 {
            return Err(LinkError::KeyTooShort);
        }
        Ok(Self(bytes.to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new` already refused the short ones.
        match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        }
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

/// What a link may do; part of what is signed, so an unsubscribe token never acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Acknowledge a notification, stopping its escalation.
    Ack,
    /// Opt the notification's recipient out of the notification's channel.
    Unsubscribe,
}

impl Purpose {
    /// The name in the token and in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Ack => "ack",
            Purpose::Unsubscribe => "unsubscribe",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ack" => Some(Purpose::Ack),
            "unsubscribe" => Some(Purpose::Unsubscribe),
            _ => None,
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub purpose: Purpose,
    /// The notification id the link is about.
    pub notification: String,
    /// Unix milliseconds after which the link no longer works.
    pub expires_ms: i64,
}

/// Why a token was refused. The HTTP layer answers each with a page, never with detail an
/// attacker could use beyond "not valid" and "expired".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link key must be at least 16 bytes")]
    KeyTooShort,
    #[error("the link is not valid")]
    Malformed,
    #[error("the link is not valid")]
    BadSignature,
    #[error("the link is for another action")]
    WrongPurpose,
    #[error("the link has expired")]
    Expired,
}

/// The token for `claims`: `v1.<purpose>.<expires_ms>.<id, base64url>.<mac, base64url>`.
pub(crate) fn sign(key: &LinkKey, claims: &LinkClaims) -> String {
    let body = format!(
        "v1.{}.{}.{}",
        claims.purpose.as_str(),
        claims.expires_ms,
        URL_SAFE_NO_PAD.encode(claims.notification.as_bytes())
    );
    let mut mac = key.mac();
    mac.update(body.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{body}.{tag}")
}

/// The claims of `token` if it is well formed, signed by `key`, for `purpose` and not expired
/// at `now_ms`. The signature is checked (in constant time) before anything else is believed.
pub(crate) fn verify(
    key: &LinkKey,
    token: &str,
    purpose: Purpose,
    now_ms: i64,
) -> Result<LinkClaims, LinkError> {
    if token.len() > 512 {
        return Err(LinkError::Malformed);
    }
    let (body, tag) = token.rsplit_once('.').ok_or(LinkError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| LinkError::Malformed)?;
    let mut mac = key.mac();
    mac.update(body.as_bytes());
    mac.verify_slice(&tag)
        .map_err(|_| LinkError::BadSignature)?;

    let mut parts = body.split('.');
    let (Some("v1"), Some(p), Some(expires), Some(id), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(LinkError::Malformed);
    };
    let found = Purpose::parse(p).ok_or(LinkError::Malformed)?;
    let expires_ms: i64 = expires.parse().map_err(|_| LinkError::Malformed)?;
    let notification = URL_SAFE_NO_PAD
        .decode(id)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(LinkError::Malformed)?;
    if found != purpose {
        return Err(LinkError::WrongPurpose);
    }
    if now_ms >= expires_ms {
        return Err(LinkError::Expired);
    }
    Ok(LinkClaims {
        purpose: found,
        notification,
        expires_ms,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> LinkKey {
        LinkKey::new(b"0123456789abcdef-link-key").unwrap()
    }

    fn ack(expires_ms: i64) -> LinkClaims {
        LinkClaims {
            purpose: Purpose::Ack,
            notification: "0190f0c2-7a3b-7000-8000-000000000001".into(),
            expires_ms,
        }
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims_before_it_expires() {
        let token = sign(&key(), &ack(2_000));
        assert_eq!(verify(&key(), &token, Purpose::Ack, 1_999), Ok(ack(2_000)));
    }

    #[test]
    fn a_token_is_refused_from_its_expiry_on() {
        let token = sign(&key(), &ack(2_000));
        assert_eq!(
            verify(&key(), &token, Purpose::Ack, 2_000),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn a_token_for_one_purpose_does_not_serve_another() {
        let token = sign(&key(), &ack(2_000));
        assert_eq!(
            verify(&key(), &token, Purpose::Unsubscribe, 0),
            Err(LinkError::WrongPurpose)
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = LinkKey::new(b"another-key-of-16-bytes").unwrap();
        let token = sign(&other, &ack(2_000));
        assert_eq!(
            verify(&key(), &token, Purpose::Ack, 0),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn changing_any_signed_part_breaks_the_signature() {
        let token = sign(&key(), &ack(2_000));
        let longer = token.replacen(".2000.", ".9999999.", 1);
        assert_eq!(
            verify(&key(), &longer, Purpose::Ack, 0),
            Err(LinkError::BadSignature)
        );
        let other_id = sign(
            &key(),
            &LinkClaims {
                notification: "x".into(),
                ..ack(2_000)
            },
        );
        let (_, tag) = other_id.rsplit_once('.').unwrap();
        let (body, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            verify(&key(), &format!("{body}.{tag}"), Purpose::Ack, 0),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in ["", ".", "v1", "v1.ack.1.x.!!", &"a".repeat(600)] {
            assert!(verify(&key(), token, Purpose::Ack, 0).is_err(), "{token}");
        }
    }

    #[test]
    fn a_key_under_16_bytes_is_refused() {
        assert_eq!(
            LinkKey::new(b"short").map(|_| ()),
            Err(LinkError::KeyTooShort)
        );
    }

    #[test]
    fn the_key_never_prints() {
        assert_eq!(format!("{:?}", key()), "LinkKey(***)");
    }
}
