//! Masking of personal data before it reaches a log line.

/// Masks a recipient for logs: keeps enough to tell two apart while debugging, never the whole.
///
/// `alice@example.com` → `a***@example.com`; `+15551234567` → `+155***67`; long opaque tokens
/// keep their first 6 characters.
pub fn mask_recipient(to: &str) -> String {
    let chars: Vec<char> = to.chars().collect();
    if let Some(at) = to.find('@') {
        let (local, domain) = to.split_at(at);
        let first: String = local.chars().take(1).collect();
        return format!("{first}***{domain}");
    }
    match chars.len() {
        0 => String::new(),
        1..=6 => "***".to_owned(),
        7..=20 => {
            let head: String = chars[..4].iter().collect();
            let tail: String = chars[chars.len() - 2..].iter().collect();
            format!("{head}***{tail}")
        }
        _ => {
            let head: String = chars[..6].iter().collect();
            format!("{head}***")
        }
    }
}

/// Recipients shorter than this are never searched for in text: they identify nobody, and a
/// one- or two-letter word ("a", "to") is in most error messages.
const MIN_SEARCHED_CHARS: usize = 3;

/// `text` with every occurrence of the recipient replaced by its masked form, for logs.
///
/// Matching is ASCII case-insensitive (mail servers change the case of addresses) and whole
/// words only: an occurrence inside a longer word is another word, not the recipient (`a` never
/// masks the `a` of `invalid`). Recipients shorter than 3 characters are not searched for.
pub fn mask_in(text: &str, recipient: &str) -> String {
    let needle = recipient.trim();
    if needle.chars().count() < MIN_SEARCHED_CHARS {
        return text.to_owned();
    }
    let masked = mask_recipient(needle);
    let (hay, pat) = (text.to_ascii_lowercase(), needle.to_ascii_lowercase());
    // A word character at the needle's edge must not continue into the text around it.
    let edge_free = |edge: Option<char>, beside: Option<char>| {
        !(edge.is_some_and(is_word) && beside.is_some_and(is_word))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    // ASCII lowercasing keeps byte offsets, so matches in `hay` are char boundaries in `text`.
    for (at, _) in hay.match_indices(&pat) {
        let end = at + pat.len();
        let whole_word = edge_free(pat.chars().next(), text[..at].chars().next_back())
            && edge_free(pat.chars().next_back(), text[end..].chars().next());
        if at < rest || !whole_word {
            continue;
        }
        out.push_str(&text[rest..at]);
        out.push_str(&masked);
        rest = end;
    }
    out.push_str(&text[rest..]);
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_letter_recipient_masks_nothing_in_the_message() {
        let text = "invalid recipient: a is not a valid address";
        assert_eq!(mask_in(text, "a"), text);
        assert_eq!(mask_in(text, "ab"), text);
    }

    #[test]
    fn a_short_recipient_inside_longer_words_is_left_alone() {
        assert_eq!(
            mask_in("bobsled: bob rejected (bobby)", "bob"),
            "bobsled: *** rejected (bobby)"
        );
        assert_eq!(
            mask_in("token abc123def unknown", "abc"),
            "token abc123def unknown"
        );
    }

    #[test]
    fn a_recipient_between_punctuation_is_masked() {
        assert_eq!(
            mask_in("550 <Alice@Example.COM>: rejected", "alice@example.com"),
            "550 <a***@example.com>: rejected"
        );
        assert_eq!(
            mask_in(
                "The 'To' number +15551234567, (+15551234567)",
                "+15551234567"
            ),
            "The 'To' number +155***67, (+155***67)"
        );
    }

    #[test]
    fn email_keeps_first_letter_and_domain() {
        assert_eq!(mask_recipient("alice@example.com"), "a***@example.com");
    }

    #[test]
    fn phone_number_keeps_country_prefix_and_last_two_digits() {
        assert_eq!(mask_recipient("+15551234567"), "+155***67");
    }

    #[test]
    fn short_values_are_fully_masked() {
        assert_eq!(mask_recipient("12345"), "***");
    }

    #[test]
    fn long_tokens_keep_a_prefix_only() {
        assert_eq!(
            mask_recipient("https://hooks.example.com/services/T0/B0/secret"),
            "https:***"
        );
    }
}
