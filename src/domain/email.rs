//! Email addresses: one normal form, so that uniqueness and login agree.

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
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("must not contain white space or control characters");
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return invalid("must be an email address like name@example.com");
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN || local.contains('@') {
            return invalid("the part before @ must be 1 to 64 bytes without @");
        }
        if !is_valid_domain(domain) {
            return invalid("the part after @ must be a domain like example.com");
        }
        Ok(Email(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
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
        ] {
            assert!(Email::parse("email", raw).is_err(), "{raw:?}");
        }
    }
}
