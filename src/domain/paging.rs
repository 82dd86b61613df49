//! AIP-158 paging: page sizes and opaque page tokens for keyset paging.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::error::DomainError;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;
const MAX_TOKEN_LEN: usize = 1024;

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

/// Where a page in an order other than the id's starts: after the row with
/// this id and this sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCursor {
    pub after: Uuid,
    pub key: String,
}

impl KeyedCursor {
    /// The token of this cursor for `filter`. The filter travels as a digest
    /// (it may hold any text), the key last (it may hold `|`).
    pub fn encode(&self, filter: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v2|{}|{}|{}",
            filter_digest(filter),
            self.after,
            self.key
        ))
    }

    /// Decodes `raw` (empty means the first page) and checks that it was
    /// made for `filter`.
    pub fn decode(raw: &str, filter: &str) -> Result<Option<Self>, DomainError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = || DomainError::invalid("page_token", "is not a page token of this query");
        if raw.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(4, '|');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("v2"), Some(digest), Some(after), Some(key))
                if digest == filter_digest(filter) =>
            {
                Ok(Some(KeyedCursor {
                    after: after.parse().map_err(|_| invalid())?,
                    key: key.to_owned(),
                }))
            }
            _ => Err(invalid()),
        }
    }
}

fn filter_digest(filter: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(filter.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Like [`next_page_token`], for a page in the order of `cursor`.
pub fn next_keyed_page_token<T>(
    rows: &mut Vec<T>,
    page_size: i64,
    filter: &str,
    cursor: impl Fn(&T) -> KeyedCursor,
) -> String {
    let page_size = usize::try_from(page_size).unwrap_or(usize::MAX);
    if rows.len() <= page_size {
        return String::new();
    }
    rows.truncate(page_size);
    rows.last()
        .map(|last| cursor(last).encode(filter))
        .unwrap_or_default()
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
    fn keyed_cursors_round_trip_only_for_their_filter() {
        let cursor = KeyedCursor {
            after: Uuid::now_v7(),
            key: "a|b@example.com".into(),
        };
        let token = cursor.encode("prefix=\"a|\"");
        assert_eq!(
            KeyedCursor::decode(&token, "prefix=\"a|\"").ok(),
            Some(Some(cursor))
        );
        assert!(KeyedCursor::decode(&token, "prefix=\"a\"").is_err());
        let v1 = PageToken {
            filter: "prefix=\"a|\"".into(),
            after: Uuid::now_v7(),
        }
        .encode();
        assert!(KeyedCursor::decode(&v1, "prefix=\"a|\"").is_err());
    }

    #[test]
    fn page_sizes_default_cap_and_reject_negatives() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(100_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
