//! Email addresses: one normal form, so that uniqueness and login agree.
//!
//! Unicode is allowed (internationalised addresses), in one form: trimmed,
//! NFC-normalised, then lower-cased, so that the same address typed with
//! composed or decomposed accents or in another case is the same email.
//! White space, control characters and invisible format characters (zero
//! width spaces and joiners, bidi overrides, soft hyphens, BOM) are refused:
//! they make two different addresses look alike. Confusables from other
//! scripts (a Cyrillic `а` for a Latin `a`) are different characters and so
//! different addresses: each is unique on its own, and neither signs in as
//! the other. A trailing dot in the domain is refused rather than dropped.

use unicode_normalization::UnicodeNormalization as _;

use super::error::DomainError;

const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// A validated, normalised email address: trimmed and lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Validates `raw` as the request field `field` and normalises it.
    pub fn parse(field: &str, raw: &str) -> Result<Self, DomainError> {
        let trimmed = raw.trim();
        let invalid = |why: &str| Err(DomainError::invalid(field, why));
        if trimmed.is_empty() {
            return invalid("must not be empty");
        }
        if trimmed.len() > MAX_LEN {
            return invalid("must be at most 254 bytes");
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return invalid("must not contain white space, control or invisible characters");
        }
        let normal: String = trimmed.nfc().collect::<String>().to_lowercase();
        if normal.len() > MAX_LEN {
            return invalid("must be at most 254 bytes");
        }
        let trimmed = normal.as_str();
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return invalid("must be an email address like name@example.com");
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN || local.contains('@') {
            return invalid("the part before @ must be 1 to 64 bytes without @");
        }
        if !is_valid_domain(domain) {
            return invalid("the part after @ must be a domain like example.com");
        }
        Ok(Email(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The start of an email to search by, in the emails' normal form;
    /// `None` when empty (no filter).
    pub fn prefix(field: &str, raw: &str) -> Result<Option<String>, DomainError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(DomainError::invalid(
                field,
                "must not contain white space, control or invisible characters",
            ));
        }
        let normal: String = trimmed.nfc().collect::<String>().to_lowercase();
        if normal.len() > MAX_LEN {
            return Err(DomainError::invalid(field, "must be at most 254 bytes"));
        }
        Ok(Some(normal))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Format characters that render as nothing (Unicode category Cf, the ones
/// seen in spoofing): soft hyphen, zero width space/joiners, marks, bidi
/// embeddings and overrides, word joiner and invisible operators, BOM.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}')
}

fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_surrounding_space() {
        let email = Email::parse("email", "  Alice@Example.COM ").map(Email::into_string);
        assert_eq!(email.ok().as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for raw in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@example..com",
            "alice@example.com.",
            "ali ce@example.com",
            "alice@exa\u{0}mple.com",
            "alice@example.com..",
            "al\u{200B}ice@example.com",
            "alice\u{202E}@example.com",
            "\u{FEFF}alice@example.com",
            "alice@exam\u{00AD}ple.com",
        ] {
            assert!(Email::parse("email", raw).is_err(), "{raw:?}");
        }
    }

    fn parsed(raw: &str) -> String {
        Email::parse("email", raw).expect(raw).into_string()
    }

    #[test]
    fn unicode_has_one_form_and_confusables_stay_apart() {
        // Composed and decomposed é, in either case, are one address.
        assert_eq!(
            parsed("jos\u{e9}@example.com"),
            parsed("JOSE\u{301}@Example.com")
        );
        assert_eq!(parsed("STRASSE@example.com"), "strasse@example.com");
        assert_eq!(parsed("Ünïcödé@bücher.example"), "ünïcödé@bücher.example");
        // A Cyrillic а is not a Latin a.
        assert_ne!(
            parsed("\u{430}lice@example.com"),
            parsed("alice@example.com")
        );
        // Mixed case is one address.
        assert_eq!(parsed("ALICE@EXAMPLE.COM"), parsed("alice@example.com"));
    }
}
