//! What a fallback child is: the notification queued when one ends badly and has a fallback
//! route left.

use crate::model::NotificationId;
use crate::model::{Content, FallbackRoute, NewNotification, Priority};

/// What the child needs of the notification that ended, as read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FallbackParent {
    pub id: String,
    /// Its routes still to try, in order.
    pub routes: Vec<FallbackRoute>,
    /// Its own content, sent by a route that carries none of its own.
    pub content: Content,
    pub priority: Priority,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// The idempotency key of a parent's child: a parent queues at most one, however often the
/// completion that ends it is written.
pub(crate) fn fallback_key(parent_id: &str) -> String {
    format!("fallback:{parent_id}")
}

/// The child for the parent's first route, carrying the rest, or `None` when no route is left.
/// It is due now, keeps the parent's priority and expiry, and is as old as the parent (clamped
/// to `[0, now]`, so a clock that jumped back never makes it younger than the epoch or newer than
/// its own creation). Content rendered for the route's kind wins over the parent's.
pub(crate) fn fallback_child(
    parent: FallbackParent,
    child_id: NotificationId,
    now_ms: i64,
) -> Option<NewNotification> {
    let mut routes = parent.routes.into_iter();
    let next = routes.next()?;
    let content = next.content.unwrap_or(parent.content);
    Some(NewNotification {
        id: child_id,
        channel: next.target.channel,
        to: next.target.to,
        subject: content.subject,
        body: content.body,
        html: content.html,
        data: content.data,
        priority: parent.priority,
        run_at_ms: now_ms,
        expires_at_ms: parent.expires_at_ms,
        created_at_ms: parent.created_at_ms.max(0).min(now_ms),
        idempotency_key: Some(fallback_key(&parent.id)),
        // Matches no submission: only the parent's completion may queue it.
        content_hash: String::new(),
        fallback: routes.collect(),
        // What arrived is the parent's; the child links to it through `fallback_of`.
        source: None,
        // A fallback route is the last resort once the parent failed: it goes when it can.
        deliver_between: None,
        // The parent held the key; the child is its continuation, not a new submission.
        dedup: None,
        // Its own route: sent alone, like the parent's failure it follows.
        digest: None,
        escalation: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::FallbackTarget;

    const NOW: i64 = 1_700_000_000_000;

    fn route(channel: &str, to: &str, content: Option<Content>) -> FallbackRoute {
        FallbackRoute {
            target: FallbackTarget {
                channel: channel.into(),
                to: to.into(),
            },
            content,
        }
    }

    fn text(body: &str) -> Content {
        Content {
            subject: None,
            body: Some(body.into()),
            html: None,
            data: None,
        }
    }

    fn parent(routes: Vec<FallbackRoute>) -> FallbackParent {
        FallbackParent {
            id: "p1".into(),
            routes,
            content: Content {
                subject: Some("Hi".into()),
                body: Some("parent body".into()),
                html: Some("<p>parent</p>".into()),
                data: Some(serde_json::json!({"k": 1})),
            },
            priority: Priority::High,
            expires_at_ms: Some(NOW + 60_000),
            created_at_ms: NOW - 5_000,
        }
    }

    #[test]
    fn the_child_takes_the_first_route_and_carries_the_rest() {
        let child = fallback_child(
            parent(vec![
                route("sms", "+15550001", None),
                route("email", "a@example.com", None),
            ]),
            "c1".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(child.id, "c1");
        assert_eq!(
            (child.channel.as_str(), child.to.as_str()),
            ("sms", "+15550001")
        );
        assert_eq!(child.fallback, vec![route("email", "a@example.com", None)]);
        assert_eq!(child.idempotency_key.as_deref(), Some("fallback:p1"));
        assert_eq!(child.priority, Priority::High);
        assert_eq!(child.run_at_ms, NOW);
        assert_eq!(child.expires_at_ms, Some(NOW + 60_000));
        assert_eq!(child.created_at_ms, NOW - 5_000);
    }

    #[test]
    fn without_content_of_its_own_the_child_sends_the_parents() {
        let child =
            fallback_child(parent(vec![route("sms", "+1", None)]), "c".into(), NOW).unwrap();
        assert_eq!(child.subject.as_deref(), Some("Hi"));
        assert_eq!(child.body.as_deref(), Some("parent body"));
        assert_eq!(child.html.as_deref(), Some("<p>parent</p>"));
        assert_eq!(child.data, Some(serde_json::json!({"k": 1})));
    }

    #[test]
    fn content_rendered_for_the_route_wins_over_the_parents() {
        let child = fallback_child(
            parent(vec![route("sms", "+1", Some(text("sms text")))]),
            "c".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(child.body.as_deref(), Some("sms text"));
        assert_eq!(child.subject, None);
        assert_eq!(child.data, None);
    }

    #[test]
    fn no_route_left_means_no_child() {
        assert_eq!(fallback_child(parent(Vec::new()), "c".into(), NOW), None);
    }

    #[test]
    fn the_childs_age_is_clamped_between_the_epoch_and_now() {
        let mut future = parent(vec![route("sms", "+1", None)]);
        future.created_at_ms = NOW + 10_000;
        assert_eq!(
            fallback_child(future, "c".into(), NOW)
                .unwrap()
                .created_at_ms,
            NOW
        );
        let mut negative = parent(vec![route("sms", "+1", None)]);
        negative.created_at_ms = -1;
        assert_eq!(
            fallback_child(negative, "c".into(), NOW)
                .unwrap()
                .created_at_ms,
            0
        );
    }
}
