//! The one field-error type: an input refused, named by the field at fault. A channel's
//! `validate` answers it, the daemon's submission checks answer it (and add the field's place in
//! the request with [`FieldError::under`]), and the API renders it as its 422 body
//! `{"error": {"code", "message", "field"}}`.

/// An input refused, blamed on one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field at fault, as a path in the request (`to`, `data`, `fallback[1].to`, ...).
    pub field: String,
    /// Stable machine-readable code (`invalid_recipient`, `missing_content`, `too_long`, ...).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl FieldError {
    /// A refusal blamed on `field`.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The same refusal for the field as a part of `parent`: `to` under `fallback[2]` is
    /// `fallback[2].to`.
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        self.field = field_path(parent, &self.field);
        self
    }
}

/// The path of `field` inside `parent`: joined with `.`, except an index (`[3]`), which follows
/// directly; an empty side leaves the other as it is.
pub fn field_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else if field.is_empty() {
        parent.to_owned()
    } else if field.starts_with('[') {
        format!("{parent}{field}")
    } else {
        format!("{parent}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_under_a_parent_is_joined_with_a_dot() {
        let e =
            FieldError::new("to", "invalid_recipient", "must not be empty").under("fallback[2]");
        assert_eq!(e.field, "fallback[2].to");
        assert_eq!(e.to_string(), "fallback[2].to: must not be empty");
    }

    #[test]
    fn an_index_follows_its_parent_directly() {
        assert_eq!(field_path("notifications", "[0].to"), "notifications[0].to");
    }

    #[test]
    fn an_empty_side_leaves_the_other() {
        assert_eq!(field_path("", "to"), "to");
        assert_eq!(field_path("notifications[1]", ""), "notifications[1]");
    }
}
