//! How an SMS body is split: GSM-7 when every character fits the GSM 03.38 alphabet (160 per
//! message, 153 per part when split), UCS-2 otherwise (70, 67). Extension characters such as
//! `€` and `[` take two GSM-7 septets.

/// The alphabet an SMS body needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// How many parts a body takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub segments: u32,
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{0c}";

/// Counts the segments of `body`.
pub fn count(body: &str) -> Segments {
    let mut septets = 0usize;
    for c in body.chars() {
        if GSM_BASIC.contains(c) {
            septets += 1;
        } else if GSM_EXTENSION.contains(c) {
            septets += 2;
        } else {
            let units = body.encode_utf16().count();
            return Segments {
                encoding: Encoding::Ucs2,
                units,
                segments: parts(units, 70, 67),
            };
        }
    }
    Segments {
        encoding: Encoding::Gsm7,
        units: septets,
        segments: parts(septets, 160, 153),
    }
}

fn parts(units: usize, single: usize, each: usize) -> u32 {
    let n = if units <= single {
        1
    } else {
        units.div_ceil(each)
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `+` then 8 to 15 digits, the first not 0: an E.164 number.
pub fn is_e164(to: &str) -> bool {
    let Some(digits) = to.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_gsm7_with_160_in_one_segment() {
        assert_eq!(
            count(&"a".repeat(160)),
            Segments {
                encoding: Encoding::Gsm7,
                units: 160,
                segments: 1
            }
        );
        assert_eq!(count(&"a".repeat(161)).segments, 2);
        assert_eq!(count(&"a".repeat(306)).segments, 2);
        assert_eq!(count(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn extension_characters_count_twice() {
        let c = count("Price: 5€ [approx]");
        assert_eq!(c.encoding, Encoding::Gsm7);
        assert_eq!(c.units, 18 + 3);
        assert_eq!(count(&"€".repeat(80)).segments, 1);
        assert_eq!(count(&"€".repeat(81)).segments, 2);
    }

    #[test]
    fn emoji_and_cyrillic_need_ucs2() {
        assert_eq!(count("Привет").encoding, Encoding::Ucs2);
        assert_eq!(count(&"я".repeat(70)).segments, 1);
        assert_eq!(count(&"я".repeat(71)).segments, 2);
        // An emoji is two UTF-16 code units.
        assert_eq!(count("🙂").units, 2);
        assert_eq!(count(&"🙂".repeat(35)).segments, 1);
        assert_eq!(count(&"🙂".repeat(36)).segments, 2);
    }

    #[test]
    fn e164_numbers() {
        assert!(is_e164("+15551234567"));
        assert!(is_e164("+447700900000"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1 555 123 4567"));
        assert!(!is_e164("+1234567890123456"));
    }
}
