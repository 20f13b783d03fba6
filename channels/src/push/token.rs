//! A credential cached until shortly before it expires, refreshed by one caller while the
//! others wait for that refresh (single flight): a burst of sends costs one token request.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{DeliveryError, Secret};

/// A cached bearer credential.
#[derive(Debug, Default)]
pub struct TokenCache {
    current: Mutex<Option<(Secret, Instant)>>,
}

impl TokenCache {
    /// The cached token if it is still good for `margin`, else a fresh one from `refresh`
    /// (which returns the token and how long it is valid). `stale` is a token the provider just
    /// refused: it is replaced even if it looks valid.
    pub async fn get<F, Fut>(
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
        *current = Some((token.clone(), Instant::now() + valid_for));
        Ok(token)
    }
}
