//! Durations in config as human strings: `"150ms"`, `"5s"`, `"10m"`, `"1h 30m"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a humantime duration string.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write e.g. \"500ms\", \"5s\", \"10m\""
        ))
    })
}

/// The same for an optional duration.
pub(crate) mod option {
    use super::*;

    /// Deserializes an optional humantime duration string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}
