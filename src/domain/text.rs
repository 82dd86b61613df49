//! Text that people read: the one rule of which characters may not appear in
//! a name or an address someone else will see, because they make two
//! different texts look alike or make a text look like something it is not.

use super::error::DomainError;

/// Format characters that render as nothing (Unicode category Cf and the
/// fillers that behave like it, the ones seen in spoofing and in smuggled
/// text): soft hyphen, combining grapheme joiner, Hangul fillers, zero width
/// space/joiners, marks, bidi embeddings, overrides and isolates, word joiner
/// and invisible operators, BOM, interlinear annotation, shorthand format
/// controls, musical formatting, and the tag characters. Variation selectors
/// are allowed: they only choose how a visible character (an emoji) looks.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
        | '\u{17B4}' | '\u{17B5}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}')
}

/// Whether `c` may not appear in a name people read: a control character,
/// an invisible one, or a line or paragraph separator (a name is one line).
pub fn is_unreadable(c: char) -> bool {
    c.is_control() || is_invisible(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A name that people read (an organisation's, a personal API token's), as
/// the request field `field`: trimmed, 1 to `max_chars` characters, without
/// control, invisible or line-breaking characters.
pub fn display_name(field: &str, raw: &str, max_chars: usize) -> Result<String, DomainError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > max_chars {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {max_chars} characters"),
        ));
    }
    if name.chars().any(is_unreadable) {
        return Err(DomainError::invalid(
            field,
            "must not contain control, invisible or line-breaking characters",
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_readable() {
        assert_eq!(
            display_name("n", "  Acme  ", 10).ok().as_deref(),
            Some("Acme")
        );
        assert_eq!(
            display_name("n", "Bücher & Söhne ❤\u{FE0F}", 30)
                .ok()
                .as_deref(),
            Some("Bücher & Söhne ❤\u{FE0F}")
        );
        // An encoded word is visible text: allowed, and encoded by the mailer.
        assert!(display_name("n", "=?utf-8?q?Acme=0D=0ABcc:x?=", 200).is_ok());
        assert!(display_name("n", "", 10).is_err());
        assert!(display_name("n", "   ", 10).is_err());
        assert!(display_name("n", "abcdefghijk", 10).is_err());
        for bad in [
            "Ac\u{7}me",
            "Ac\nme",
            "Acme\u{202E}moc.evil",
            "Ac\u{200B}me",
            "Ac\u{2066}me",
            "\u{FEFF}Acme",
            "Ac\u{00AD}me",
            "Ac\u{2028}me",
            "Acme\u{E0041}",
            "Ac\u{3164}me",
        ] {
            match display_name("organisation.name", bad, 200) {
                Err(DomainError::InvalidArgument(v)) => {
                    assert_eq!(v[0].field, "organisation.name", "{bad:?}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
