//! AIP-158 paging: page sizes and opaque page tokens for keyset paging.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::error::DomainError;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;
const MAX_TOKEN_LEN: usize = 256;

/// The page size of a request: 0 means the default, larger than the maximum
/// is coerced down to it (AIP-158), negative is an error.
pub fn page_size(requested: i32) -> Result<i64, DomainError> {
    match i64::from(requested) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(DomainError::invalid("page_size", "must not be negative")),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Where a page starts: after the row with this id, for this filter.
/// The filter travels in the token so that a token is only ever used with the
/// query that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub filter: String,
    pub after: Uuid,
}

impl PageToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1|{}|{}", self.filter, self.after))
    }

    /// Decodes `raw` (empty means the first page) and checks that it was made
    /// for `filter`.
    pub fn decode(raw: &str, filter: &str) -> Result<Option<Uuid>, DomainError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = || DomainError::invalid("page_token", "is not a page token of this query");
        if raw.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("v1"), Some(token_filter), Some(after)) if token_filter == filter => {
                after.parse().map(Some).map_err(|_| invalid())
            }
            _ => Err(invalid()),
        }
    }
}

/// Trims a page fetched with one row more than `page_size` and returns the
/// token of the next page (empty when this is the last).
pub fn next_page_token<T>(
    rows: &mut Vec<T>,
    page_size: i64,
    filter: &str,
    id: impl Fn(&T) -> Uuid,
) -> String {
    let page_size = usize::try_from(page_size).unwrap_or(usize::MAX);
    if rows.len() <= page_size {
        return String::new();
    }
    rows.truncate(page_size);
    rows.last()
        .map(|last| {
            PageToken {
                filter: filter.to_owned(),
                after: id(last),
            }
            .encode()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_only_for_their_filter() {
        let after = Uuid::now_v7();
        let token = PageToken {
            filter: "role=nanoUser".into(),
            after,
        }
        .encode();
        assert_eq!(
            PageToken::decode(&token, "role=nanoUser").ok(),
            Some(Some(after))
        );
        assert!(PageToken::decode(&token, "role=*").is_err());
        assert!(PageToken::decode("garbage!", "role=*").is_err());
        assert_eq!(PageToken::decode("", "role=*").ok(), Some(None));
    }

    #[test]
    fn page_sizes_default_cap_and_reject_negatives() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(100_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
