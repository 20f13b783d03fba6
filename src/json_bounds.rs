//! Bounds on the JSON a caller hands in (`data`, `vars`), so that what is accepted is stored
//! exactly and can always be read back.
//!
//! - **Depth**: serde_json refuses to parse JSON nested more than 127 levels deep, and the queue
//!   stores a caller's value inside wrappers of its own (a fallback route keeps its rendered
//!   content as `[{"content": {"data": …}}]`). A value accepted at any depth up to
//!   [`MAX_DEPTH`] stays far under that limit in every column that holds it.
//! - **Exact integers**: without serde_json's global `arbitrary_precision` feature, an integer
//!   literal outside `i64` (e.g. `18446744073709551616`) silently becomes a float. Such literals
//!   are refused instead, naming their path.

use serde_json::Value;

/// Deepest nesting of arrays and objects accepted in `data` and `vars` (a scalar is depth 0,
/// `{"a": [1]}` depth 2). Far more than any notification needs; far less than serde_json's
/// recursion limit ([`SERDE_JSON_MAX_NESTING`]) with the store's wrappers around it.
pub const MAX_DEPTH: usize = 32;

/// The deepest nesting serde_json parses (its recursion limit of 128 counts the level that fails).
pub(crate) const SERDE_JSON_MAX_NESTING: usize = 127;

// What a caller gives is wrapped by the store (fallback list → route → content → data) and by
// providers' payloads: keep most of serde_json's budget for them.
const _: () = assert!(MAX_DEPTH * 2 < SERDE_JSON_MAX_NESTING);

/// How deeply arrays and objects nest in `value` (without recursion: any input is safe).
pub(crate) fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, d)) = pending.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                pending.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                pending.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// One level of the path to the current token.
enum Level {
    Object {
        key: Option<String>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The paths (`data.n`, `notifications[2].vars.id`) of every integer literal in `json` that is
/// outside `i64`, in document order. `json` must already have parsed as JSON (this only
/// tokenizes); a root scalar's path is the empty string.
pub(crate) fn inexact_integers(json: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    if !has_digit_run(json, DIGITS_OUTSIDE_I64) {
        // Most texts: none of their literals can be outside `i64`, and the walk below (which
        // decodes every object key) is skipped.
        return found;
    }
    let mut levels: Vec<Level> = Vec::new();
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'{' => levels.push(Level::Object {
                key: None,
                expect_key: true,
            }),
            b'[' => levels.push(Level::Array { index: 0 }),
            b'}' | b']' => {
                levels.pop();
            }
            b',' => match levels.last_mut() {
                Some(Level::Array { index }) => *index += 1,
                Some(Level::Object { key, expect_key }) => {
                    *key = None;
                    *expect_key = true;
                }
                None => {}
            },
            b':' => {
                if let Some(Level::Object { expect_key, .. }) = levels.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while let Some(&c) = json.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if let Some(Level::Object {
                    key,
                    expect_key: true,
                }) = levels.last_mut()
                {
                    let raw = json.get(start..=i).unwrap_or_default();
                    *key = Some(serde_json::from_slice(raw).unwrap_or_default());
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while json
                    .get(i + 1)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let literal = json.get(start..=i).unwrap_or_default();
                let integer = !literal.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
                let fits = std::str::from_utf8(literal)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_some();
                if integer && !fits {
                    found.push(path(&levels));
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The fewest digits an integer literal outside `i64` has: every literal of 18 digits or fewer
/// fits (`i64::MAX` has 19).
const DIGITS_OUTSIDE_I64: usize = 19;

/// Whether `text` holds `run` ASCII digits in a row (in a literal or inside a string).
fn has_digit_run(text: &[u8], run: usize) -> bool {
    let mut digits = 0;
    for b in text {
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= run {
                return true;
            }
        } else {
            digits = 0;
        }
    }
    false
}

/// `levels` written as a field path: `a.b[2].c`.
fn path(levels: &[Level]) -> String {
    let mut out = String::new();
    for level in levels {
        match level {
            Level::Object { key: Some(k), .. } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Level::Object { key: None, .. } => {}
            Level::Array { index } => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// The length of `value` as compact JSON (as the queue stores it), without building the text.
pub(crate) fn encoded_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value into a sink that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `{"a":{"a":…1…}}`, `levels` objects deep.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn depth_counts_nested_arrays_and_objects() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        assert_eq!(depth(&nested(MAX_DEPTH)), MAX_DEPTH);
    }

    #[test]
    fn the_deepest_accepted_value_parses_again_inside_the_stored_fallback_route() {
        use crate::outbox::{Content, FallbackRoute, FallbackTarget};
        let route = FallbackRoute {
            target: FallbackTarget {
                channel: "ops".into(),
                to: "#ops".into(),
            },
            content: Some(Content {
                subject: None,
                body: None,
                html: None,
                data: Some(nested(MAX_DEPTH)),
            }),
        };
        // Stored as the writer stores it, and with a further margin of as much again.
        let stored = serde_json::to_string(&vec![route.clone()]).unwrap();
        let back: Vec<FallbackRoute> = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, vec![route]);
        let margin = serde_json::to_string(&nested(MAX_DEPTH * 2)).unwrap();
        assert!(serde_json::from_str::<Value>(&margin).is_ok());
    }

    #[test]
    fn integers_inside_i64_are_exact_and_pass() {
        let text = br#"{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e300, "d": "18446744073709551616"}"#;
        assert!(inexact_integers(text).is_empty());
    }

    #[test]
    fn integers_outside_i64_are_named_by_path() {
        let text = br#"{"data": {"big": 18446744073709551616, "u": 9223372036854775808,
            "list": [1, -9223372036854775809]}, "odd \"key\"": {"x": 99999999999999999999}}"#;
        assert_eq!(
            inexact_integers(text),
            vec!["data.big", "data.u", "data.list[1]", "odd \"key\".x"]
        );
    }

    #[test]
    fn eighteen_digits_always_fit_and_nineteen_are_checked() {
        assert_eq!(
            i64::MAX.to_string().len(),
            DIGITS_OUTSIDE_I64,
            "the shortest literal outside i64 has as many digits as i64::MAX"
        );
        assert!(
            inexact_integers(br#"{"n": -999999999999999999, "m": 999999999999999999}"#).is_empty()
        );
        assert_eq!(
            inexact_integers(br#"{"n": 9999999999999999999}"#),
            vec!["n"]
        );
        assert_eq!(
            inexact_integers(br#"{"s": "12345678901234567890", "n": -9999999999999999999}"#),
            vec!["n"]
        );
    }

    #[test]
    fn batch_items_are_named_by_index() {
        let text = br#"{"notifications": [{"data": {"n": 1}}, {"data": {"n": 1e30, "m": [[], 36893488147419103232]}}]}"#;
        assert_eq!(inexact_integers(text), vec!["notifications[1].data.m[1]"]);
    }
}
