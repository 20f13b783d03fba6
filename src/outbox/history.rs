//! The searchable history: which notifications a query asks for, in which order, and where a
//! page ends. Backend-neutral: a store turns a [`HistoryQuery`] into its own SQL.
//!
//! Order is newest first by `(created_at, id)`; a page continues strictly after its cursor, so
//! notifications accepted while someone pages never shift or repeat the pages that follow.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Priority, State};

/// The most notifications one page may hold.
pub const MAX_PAGE: usize = 500;

/// A page's size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;

/// Rows a page may walk in its index range while checking the filters no index answers
/// (subject text, priority, update time): past it the page ends early, with a `next` where the
/// walk stopped, so a rare text costs pages, not a walk of the whole queue.
pub const MAX_WALK: usize = 10_000;

/// What to search for; every filter given must hold. Times are Unix ms: `*_after` inclusive,
/// `*_before` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub state: Option<State>,
    pub channel: Option<String>,
    /// The recipient, exactly as stored.
    pub recipient: Option<String>,
    pub priority: Option<Priority>,
    pub created_after_ms: Option<i64>,
    pub created_before_ms: Option<i64>,
    pub updated_after_ms: Option<i64>,
    pub updated_before_ms: Option<i64>,
    /// Only the fallbacks queued for this notification.
    pub fallback_of: Option<String>,
    /// Text the subject contains (case-insensitive for ASCII).
    pub subject_contains: Option<String>,
}

/// Where the previous page ended: the next one holds only older notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    pub created_at_ms: i64,
    pub id: String,
}

/// A cursor that is not one this daemon handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor from a previous page's `next`")]
pub struct BadCursor;

impl HistoryCursor {
    /// The cursor of the last notification of a page.
    pub fn after(item: &HistoryItem) -> Self {
        Self {
            created_at_ms: item.created_at_ms,
            id: item.id.clone(),
        }
    }

    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.created_at_ms, self.id))
    }

    /// Reads a cursor made by [`encode`](Self::encode).
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let (ms, id) = text.split_once('.').ok_or(BadCursor)?;
        if id.is_empty() {
            return Err(BadCursor);
        }
        Ok(Self {
            created_at_ms: ms.parse().map_err(|_| BadCursor)?,
            id: id.to_owned(),
        })
    }
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub filter: HistoryFilter,
    /// Continue after this position; `None` starts at the newest.
    pub after: Option<HistoryCursor>,
    /// At most this many, `1..=MAX_PAGE`.
    pub limit: usize,
    /// At most this many rows walked past the filters no index answers ([`MAX_WALK`]).
    pub max_walk: usize,
}

impl HistoryQuery {
    /// Rows this page walks at most: one more than the page when every row walked matches,
    /// else the walk's bound.
    pub fn walk_bound(&self) -> usize {
        self.walk_bound_if(self.filter.checks_rows())
    }

    /// [`Self::walk_bound`] for a backend that knows better whether it `checks` rows walked
    /// (SQLite checks a live state, which no index of its holds).
    pub fn walk_bound_if(&self, checks: bool) -> usize {
        let page = self.limit.saturating_add(1);
        if checks {
            self.max_walk.max(page)
        } else {
            page
        }
    }
}

impl HistoryFilter {
    /// Whether a filter must be checked on each row walked (no index answers it).
    pub fn checks_rows(&self) -> bool {
        self.subject_contains.is_some()
            || self.priority.is_some()
            || self.updated_after_ms.is_some()
            || self.updated_before_ms.is_some()
    }
}

/// A notification as a history row shows it: no content but the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    pub id: String,
    pub channel: String,
    pub to: String,
    pub state: State,
    pub priority: Priority,
    pub attempts: u32,
    pub subject: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub parent_id: Option<String>,
    pub last_code: Option<String>,
}

/// A page and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    pub next: Option<HistoryCursor>,
}

impl HistoryPage {
    /// The page from up to `limit + 1` rows read in order: the extra row only says that there
    /// is more.
    pub fn from_rows(rows: Vec<HistoryItem>, limit: usize) -> Self {
        Self::from_walk(rows, None, limit)
    }

    /// The page from the matching rows of a walk in order (up to `limit + 1`), where
    /// `stopped_at` is the last row walked when the walk hit its bound (more rows lay beyond):
    /// a short page then continues from there.
    pub fn from_walk(
        mut matches: Vec<HistoryItem>,
        stopped_at: Option<HistoryCursor>,
        limit: usize,
    ) -> Self {
        if matches.len() > limit {
            matches.truncate(limit);
            let next = matches.last().map(HistoryCursor::after);
            return Self {
                items: matches,
                next,
            };
        }
        Self {
            items: matches,
            next: stopped_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(created_at_ms: i64, id: &str) -> HistoryItem {
        HistoryItem {
            id: id.into(),
            channel: "c".into(),
            to: "a@example.com".into(),
            state: State::Queued,
            priority: Priority::Normal,
            attempts: 0,
            subject: None,
            created_at_ms,
            updated_at_ms: created_at_ms,
            parent_id: None,
            last_code: None,
        }
    }

    #[test]
    fn a_cursor_reads_back_what_it_encoded() {
        let c = HistoryCursor {
            created_at_ms: 1_764_600_000_123,
            id: "019ad6c1-8f3e-7c21-b5a4-0d5e9f1a2b3c".into(),
        };
        assert_eq!(HistoryCursor::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn text_that_is_no_cursor_is_refused() {
        for bad in [
            "",
            "not base64!",
            &URL_SAFE_NO_PAD.encode("12"),
            &URL_SAFE_NO_PAD.encode("x.id"),
            &URL_SAFE_NO_PAD.encode("12."),
        ] {
            assert_eq!(HistoryCursor::decode(bad), Err(BadCursor), "{bad:?}");
        }
    }

    #[test]
    fn a_full_page_with_one_row_more_points_at_its_last_item() {
        let page = HistoryPage::from_rows(vec![item(3, "c"), item(2, "b"), item(1, "a")], 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(
            page.next,
            Some(HistoryCursor {
                created_at_ms: 2,
                id: "b".into()
            })
        );
    }

    #[test]
    fn a_short_page_whose_walk_hit_its_bound_continues_where_the_walk_stopped() {
        let stop = HistoryCursor {
            created_at_ms: 1,
            id: "z".into(),
        };
        let page = HistoryPage::from_walk(vec![item(3, "c")], Some(stop.clone()), 2);
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.next, Some(stop));
    }

    #[test]
    fn a_walk_is_one_row_past_the_page_unless_rows_are_checked() {
        let mut q = HistoryQuery {
            filter: HistoryFilter::default(),
            after: None,
            limit: 50,
            max_walk: MAX_WALK,
        };
        assert_eq!(q.walk_bound(), 51);
        q.filter.priority = Some(Priority::High);
        assert_eq!(q.walk_bound(), MAX_WALK);
        q.max_walk = 10;
        assert_eq!(q.walk_bound(), 51, "never shorter than the page");
    }

    #[test]
    fn a_page_without_the_extra_row_is_the_last() {
        let page = HistoryPage::from_rows(vec![item(3, "c"), item(2, "b")], 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next, None);
    }
}
