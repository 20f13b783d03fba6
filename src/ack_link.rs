//! The acknowledgement link a message of an escalating notification carries (`{{ ack_url }}`):
//! a [`signed_link`](crate::signed_link) token for [`Purpose::Ack`] under the public URL prefix
//! (`[links] base_url`). A GET on it shows a confirm page and changes nothing (mail scanners
//! follow links); the POST its button sends acknowledges (`api/ack.rs`).

use crate::signed_link::{self, LinkClaims, LinkError, LinkKey, Purpose};

/// Where acknowledgement links live under the public URL prefix; the token follows.
pub(crate) const PATH: &str = "/v1/links/ack/";

/// What makes acknowledgement links: the key and the public URL prefix.
#[derive(Debug, Clone)]
pub struct AckLinks {
    key: LinkKey,
    base_url: String,
}

impl AckLinks {
    /// Links under `base_url` (a trailing `/` is dropped), signed with `key`.
    pub fn new(key: LinkKey, base_url: &str) -> Self {
        Self {
            key,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The link acknowledging `notification`'s chain, working until `expires_ms`.
    pub fn url(&self, notification: &str, expires_ms: i64) -> String {
        let token = signed_link::sign(
            &self.key,
            &LinkClaims {
                purpose: Purpose::Ack,
                notification: notification.to_owned(),
                expires_ms,
            },
        );
        format!("{}{PATH}{token}", self.base_url)
    }

    /// The claims of a token from such a link, if it is one of ours and still works at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<LinkClaims, LinkError> {
        signed_link::verify(&self.key, token, Purpose::Ack, now_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn links() -> AckLinks {
        AckLinks::new(
            LinkKey::new(b"0123456789abcdef").unwrap(),
            "https://notify.example.com/",
        )
    }

    #[test]
    fn a_link_is_under_the_public_prefix_and_verifies_to_its_notification() {
        let url = links().url("n1", 5_000);
        let token = url
            .strip_prefix("https://notify.example.com/v1/links/ack/")
            .unwrap();
        let claims = links().verify(token, 4_999).unwrap();
        assert_eq!(
            (claims.notification.as_str(), claims.expires_ms),
            ("n1", 5_000)
        );
        assert_eq!(links().verify(token, 5_000), Err(LinkError::Expired));
    }
}
