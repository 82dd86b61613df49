//! AIP-158 paging: page sizes and opaque page tokens for keyset paging.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::error::{DomainError, Violations};

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

/// Where a page starts, as its token carries it: a token is bound to the
/// filter of the query that made it.
pub trait Cursor {
    /// The token of the page that starts after this cursor.
    fn encode(&self, filter: &str) -> String;
}

/// A cursor that its token alone tells how to decode.
pub trait TokenCursor: Cursor + Sized {
    /// Decodes `raw` (empty means the first page), checking that it was made
    /// for `filter`.
    fn decode(raw: &str, filter: &str) -> Result<Option<Self>, DomainError>;
}

impl TokenCursor for Uuid {
    fn decode(raw: &str, filter: &str) -> Result<Option<Self>, DomainError> {
        PageToken::decode(raw, filter)
    }
}

impl TokenCursor for KeyedCursor {
    fn decode(raw: &str, filter: &str) -> Result<Option<Self>, DomainError> {
        KeyedCursor::decode(raw, filter)
    }
}

impl Cursor for Uuid {
    fn encode(&self, filter: &str) -> String {
        PageToken {
            filter: filter.to_owned(),
            after: *self,
        }
        .encode()
    }
}

impl Cursor for KeyedCursor {
    fn encode(&self, filter: &str) -> String {
        KeyedCursor::encode(self, filter)
    }
}

/// The page a list request asks for (AIP-158): its size, where it starts,
/// and the filter its tokens are bound to. The list is fetched with one row
/// more than the page ([`Self::fetch_limit`]), so that [`Self::next_token`]
/// learns whether another page follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    pub size: i64,
    pub after: Option<C>,
    filter: String,
}

impl<C> PageRequest<C> {
    /// The page of a checked `size` (none: refused, recorded elsewhere) that
    /// starts after `after`, for a query whose filter is `filter`.
    pub fn new(size: Option<i64>, after: Option<C>, filter: impl Into<String>) -> Self {
        Self {
            size: size.unwrap_or(DEFAULT_PAGE_SIZE),
            after,
            filter: filter.into(),
        }
    }

    /// How many rows to fetch: one more than the page.
    pub fn fetch_limit(&self) -> i64 {
        self.size.saturating_add(1)
    }

    /// Trims rows fetched with [`Self::fetch_limit`] to the page and returns
    /// the token of the next page (empty when this is the last).
    pub fn next_token<T>(&self, rows: &mut Vec<T>, cursor: impl Fn(&T) -> C) -> String
    where
        C: Cursor,
    {
        let page_size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() <= page_size {
            return String::new();
        }
        rows.truncate(page_size);
        rows.last()
            .map(|last| cursor(last).encode(&self.filter))
            .unwrap_or_default()
    }
}

impl<C: Cursor> PageRequest<C> {
    /// The token of the page that starts after `after`, for a page that
    /// ended before it was full (AIP-158 lets a page be short and not the
    /// last).
    pub fn token_after(&self, after: &C) -> String {
        after.encode(&self.filter)
    }
}

impl<C: TokenCursor> PageRequest<C> {
    /// The page of a list request's `page_token` for `filter`, of the checked
    /// `size`; a token that is not this query's is recorded in `violations`.
    pub fn read(
        violations: &mut Violations,
        size: Option<i64>,
        page_token: &str,
        filter: impl Into<String>,
    ) -> Self {
        let filter = filter.into();
        let after = violations.check(C::decode(page_token, &filter)).flatten();
        Self::new(size, after, filter)
    }
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

    #[test]
    fn a_page_is_trimmed_to_its_size_and_tokens_the_row_after_its_last() {
        let ids: Vec<Uuid> = (1..=4).map(Uuid::from_u128).collect();
        let page = PageRequest::<Uuid>::new(Some(3), None, "f");
        assert_eq!(page.fetch_limit(), 4);
        let mut rows = ids.clone();
        let token = page.next_token(&mut rows, |id| *id);
        assert_eq!(rows, ids[..3]);
        let mut violations = Violations::default();
        let next = PageRequest::<Uuid>::read(&mut violations, Some(3), &token, "f");
        assert!(violations.into_result().is_ok());
        assert_eq!(next.after, Some(ids[2]));
        let mut last = ids[3..].to_vec();
        assert_eq!(next.next_token(&mut last, |id| *id), "");
        let mut violations = Violations::default();
        PageRequest::<Uuid>::read(&mut violations, Some(3), &token, "g");
        assert!(
            violations.into_result().is_err(),
            "a token of another filter"
        );
    }
}
