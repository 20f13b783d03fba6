//! Where a notification fails over to.

use crate::model::ChannelName;

/// The next channel for a notification on `current` that already left `tried`: the first of
/// the channel's `failover` list that is neither, so failover never loops.
pub(crate) fn failover_target<'a>(
    failover: &'a [ChannelName],
    current: &str,
    tried: &[String],
) -> Option<&'a str> {
    failover
        .iter()
        .find(|c| c.as_str() != current && !tried.iter().any(|t| t == *c))
        .map(ChannelName::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<ChannelName> {
        list.iter().map(|s| ChannelName::from(*s)).collect()
    }

    #[test]
    fn the_first_configured_channel_is_the_target() {
        let failover = names(&["b", "c"]);
        assert_eq!(failover_target(&failover, "a", &[]), Some("b"));
    }

    #[test]
    fn channels_already_tried_and_the_current_one_are_skipped() {
        let failover = names(&["a", "b", "c"]);
        assert_eq!(
            failover_target(&failover, "a", &["b".to_owned()]),
            Some("c")
        );
    }

    #[test]
    fn no_target_is_left_once_every_channel_was_tried() {
        let failover = names(&["b"]);
        assert_eq!(failover_target(&failover, "a", &["b".to_owned()]), None);
        assert_eq!(failover_target(&[], "a", &[]), None);
    }
}
