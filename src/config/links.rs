//! `[links]`: the signed links notifyd puts in the messages it sends (acknowledge an escalation,
//! unsubscribe from a channel). Both keys are unset by default; a rule that needs links refuses
//! to start without them.

use notifyd_channels::Secret;
use serde::Deserialize;

use super::{secret_files, without_found_value};
use crate::signed_link::LinkKey;

/// Where links point and what signs them. Every daemon sharing a queue needs the same values.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct LinksConfig {
    /// The public URL prefix the daemon is reached at by whoever clicks (`https://notify.example.com`);
    /// links are this followed by the endpoint's path.
    pub base_url: Option<String>,
    /// The HMAC key links are signed with (at least 16 bytes; `secret_file` reads it from a file).
    pub secret: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksFields {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    secret: Option<Secret>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for LinksConfig {
    type Error = String;
    fn try_from(mut table: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        secret_files::resolve(&mut table)?;
        let f: LinksFields = serde_path_to_error::deserialize(serde_json::Value::Object(table))
            .map_err(|e| without_found_value(&e.inner().to_string()))?;
        Ok(Self {
            base_url: f.base_url.map(|u| u.trim_end_matches('/').to_owned()),
            secret: f.secret,
        })
    }
}

impl LinksConfig {
    /// The signing key, when a valid one is configured.
    pub fn key(&self) -> Option<LinkKey> {
        self.secret
            .as_ref()
            .and_then(|s| LinkKey::new(s.expose().as_bytes()).ok())
    }

    /// Problems with the values given, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push("links.base_url: must start with https:// or http://".into());
        }
        if self.secret.is_some() && self.key().is_none() {
            problems.push("links.secret: must be at least 16 bytes".into());
        }
        problems
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn links(v: serde_json::Value) -> Result<LinksConfig, String> {
        LinksConfig::try_from(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_base_url_loses_its_trailing_slash() {
        let l = links(serde_json::json!({"base_url": "https://n.example.com/"})).unwrap();
        assert_eq!(l.base_url.as_deref(), Some("https://n.example.com"));
    }

    #[test]
    fn a_short_secret_and_a_url_without_scheme_are_named() {
        let l = links(serde_json::json!({"base_url": "n.example.com", "secret": "short"})).unwrap();
        assert_eq!(
            l.problems(),
            vec![
                "links.base_url: must start with https:// or http://".to_string(),
                "links.secret: must be at least 16 bytes".to_string(),
            ]
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        assert!(links(serde_json::json!({"secrets": "x"})).is_err());
    }

    #[test]
    fn a_valid_secret_gives_a_key() {
        let l = links(serde_json::json!({"secret": "0123456789abcdef"})).unwrap();
        assert!(l.key().is_some());
        assert!(l.problems().is_empty());
    }
}
