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

#[cfg(test)]
mod tests {
    use super::*;

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
