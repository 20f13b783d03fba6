//! A credential cached until shortly before it expires, refreshed by one caller while the
//! others wait for that refresh (single flight): a burst of sends costs one token request.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{DeliveryError, Secret};

/// The longest a token is kept, whatever its issuer says: `expires_in` comes from the provider,
/// and a huge one would overflow the `Instant` (a panic in the send task).
const MAX_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A cached bearer credential.
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    current: Mutex<Option<(Secret, Instant)>>,
}

impl TokenCache {
    /// The cached token if it is still good for `margin`, else a fresh one from `refresh`
    /// (which returns the token and how long it is valid). `stale` is a token the provider just
    /// refused: it is replaced even if it looks valid.
    pub(super) async fn get<F, Fut>(
        &self,
        margin: Duration,
        stale: Option<&Secret>,
        refresh: F,
    ) -> Result<Secret, DeliveryError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), DeliveryError>>,
    {
        let mut current = self.current.lock().await;
        if let Some((token, expires)) = current.as_ref()
            && Instant::now() + margin < *expires
            && stale != Some(token)
        {
            return Ok(token.clone());
        }
        let (token, valid_for) = refresh().await?;
        *current = Some((token.clone(), Instant::now() + valid_for.min(MAX_VALIDITY)));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_validity_from_the_issuer_is_capped_not_a_panic() {
        let cache = TokenCache::default();
        let first = cache
            .get(Duration::ZERO, None, || async {
                Ok((Secret::new("t1"), Duration::MAX))
            })
            .await
            .unwrap();
        assert_eq!(first.expose(), "t1");
        // Still cached for a day...
        let again = cache
            .get(Duration::from_secs(3600), None, || async {
                Ok((Secret::new("t2"), Duration::from_secs(60)))
            })
            .await
            .unwrap();
        assert_eq!(again.expose(), "t1");
        // ...but never beyond it.
        let later = cache
            .get(MAX_VALIDITY, None, || async {
                Ok((Secret::new("t3"), Duration::from_secs(60)))
            })
            .await
            .unwrap();
        assert_eq!(later.expose(), "t3");
    }
}
