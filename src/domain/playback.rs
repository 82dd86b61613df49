//! Playback tokens of secure organisations: their scopes, restrictions,
//! lifetimes and the checks a verification makes. No I/O, no crypto.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::{DomainError, Violations};

/// Longest lifetime of a token (`exp` at most this far ahead).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest lifetime of a revocable token: the revocation list only has to
/// hold a revocation for a day.
pub const MAX_REVOCABLE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The shortest ceiling an organisation may set on the lifetime of its
/// tokens that are not revocable.
pub const MIN_LIFETIME_CEILING: Duration = Duration::from_secs(1);
/// Presented tokens longer than this are refused before any crypto.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Bounds of a scope, which keep every issued token well under MAX_TOKEN_LEN.
pub const MAX_STREAMS: usize = 20;
pub const MAX_NAME_LEN: usize = 128;
const MAX_DOMAIN_LEN: usize = 253;

/// What a token may play: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Streams(Vec<String>),
    Group(String),
    Organisation,
}

impl Scope {
    pub fn streams(field: &str, names: Vec<String>) -> Result<Self, DomainError> {
        if names.is_empty() || names.len() > MAX_STREAMS {
            return Err(DomainError::invalid(
                field,
                format!("must list 1 to {MAX_STREAMS} streams"),
            ));
        }
        if names.iter().any(|name| !valid_name(name)) {
            return Err(DomainError::invalid(
                field,
                format!("stream names must be 1 to {MAX_NAME_LEN} printable characters"),
            ));
        }
        Ok(Scope::Streams(names))
    }

    pub fn group(field: &str, group_id: String) -> Result<Self, DomainError> {
        if valid_name(&group_id) {
            Ok(Scope::Group(group_id))
        } else {
            Err(DomainError::invalid(
                field,
                format!("must be 1 to {MAX_NAME_LEN} printable characters"),
            ))
        }
    }

    /// Whether the scope covers the stream a verification asks about. A
    /// group-scoped token needs the caller to name the group (this service
    /// does not know which group a stream is in), or to ask about no stream
    /// at all (then the caller checks the returned scope itself).
    pub fn allows(&self, stream: &str, group_id: &str) -> bool {
        match self {
            Scope::Organisation => true,
            Scope::Streams(names) => names.iter().any(|name| name == stream),
            Scope::Group(group) if group_id.is_empty() => stream.is_empty(),
            Scope::Group(group) => group == group_id,
        }
    }
}

/// The audit log's description of a scope.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Streams(names) => write!(f, "streams: {}", names.join(", ")),
            Scope::Group(group) => write!(f, "group: {group}"),
            Scope::Organisation => f.write_str("organisation-wide"),
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

/// Restrictions on the player; `None` restricts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    pub domain: Option<String>,
    pub ip: Option<String>,
    pub tag: Option<String>,
    pub user: Option<String>,
}

impl Restrictions {
    /// Validates the restrictions as given (empty = unset), all at once.
    pub fn parse(domain: &str, ip: &str, tag: &str, user: &str) -> Result<Self, DomainError> {
        let mut v = Violations::default();
        let domain = v.check(optional(
            "restrictions.domain",
            domain,
            MAX_DOMAIN_LEN,
            valid_domain,
        ));
        let ip = v.check(optional("restrictions.ip", ip, 64, valid_ip));
        let tag = v.check(optional("restrictions.tag", tag, MAX_NAME_LEN, valid_name));
        let user = v.check(optional(
            "restrictions.user",
            user,
            MAX_NAME_LEN,
            valid_name,
        ));
        v.into_result()?;
        Ok(Restrictions {
            domain: domain.flatten(),
            ip: ip.flatten(),
            tag: tag.flatten(),
            user: user.flatten(),
        })
    }
}

fn optional(
    field: &str,
    value: &str,
    max: usize,
    valid: fn(&str) -> bool,
) -> Result<Option<String>, DomainError> {
    match value {
        "" => Ok(None),
        text if text.chars().count() <= max && valid(text) => Ok(Some(text.to_owned())),
        _ => Err(DomainError::invalid(
            field,
            format!("must be valid and at most {max} characters"),
        )),
    }
}

fn valid_domain(domain: &str) -> bool {
    domain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-.*".contains(c))
}

/// An IP address, or a CIDR range of one.
fn valid_ip(ip: &str) -> bool {
    let (address, prefix) = match ip.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (ip, None),
    };
    let Ok(address) = IpAddr::from_str(address) else {
        return false;
    };
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= max_prefix))
}

/// When a token is valid: from `nbf` (inclusive) to `exp` (exclusive), in
/// whole seconds, as in the JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub nbf: DateTime<Utc>,
    pub exp: DateTime<Utc>,
}

/// The validity window of a new token, within the limits.
pub fn validity_window(
    now: DateTime<Utc>,
    nbf: Option<DateTime<Utc>>,
    exp: Option<DateTime<Utc>>,
    revocable: bool,
    default_ttl: Duration,
) -> Result<Window, DomainError> {
    let now = whole_seconds(now);
    let nbf = nbf.map(whole_seconds).unwrap_or(now);
    let limit = if revocable {
        MAX_REVOCABLE_LIFETIME
    } else {
        MAX_LIFETIME
    };
    // A token can live only until `now + limit`, so a later nbf is refused
    // before any arithmetic on it (a request's nbf may be near the end of
    // time, where adding a lifetime overflows).
    if nbf > now + limit {
        return Err(DomainError::invalid(
            "nbf",
            "must be before the latest expiry a token may have",
        ));
    }
    let exp = match exp {
        Some(exp) => whole_seconds(exp),
        None => nbf
            .max(now)
            .checked_add_signed(
                chrono::TimeDelta::from_std(default_ttl).unwrap_or(chrono::TimeDelta::MAX),
            )
            .ok_or_else(|| DomainError::invalid("nbf", "is too far in the future"))?,
    };
    let invalid = |description: &str| Err(DomainError::invalid("exp", description));
    if exp <= now {
        return invalid("must be in the future");
    }
    if exp <= nbf {
        return invalid("must be after nbf");
    }
    if exp > now + limit {
        return if revocable {
            invalid("a revocable token lives at most 24 hours")
        } else {
            invalid("must be at most 365 days ahead")
        };
    }
    Ok(Window { nbf, exp })
}

fn whole_seconds(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(time.timestamp(), 0).unwrap_or(time)
}

/// An organisation's ceiling on the lifetime of its tokens that are not
/// revocable, as a request gives it: whole seconds, from
/// [`MIN_LIFETIME_CEILING`] to the service's own [`MAX_LIFETIME`].
pub fn lifetime_ceiling(field: &str, seconds: i64, nanos: i32) -> Result<Duration, DomainError> {
    let (min, max) = (MIN_LIFETIME_CEILING.as_secs(), MAX_LIFETIME.as_secs());
    match u64::try_from(seconds) {
        Ok(seconds) if nanos == 0 && (min..=max).contains(&seconds) => {
            Ok(Duration::from_secs(seconds))
        }
        _ => Err(DomainError::invalid(
            field,
            format!("must be whole seconds, from {min} to {max} (365 days)"),
        )),
    }
}

/// The organisation's ceiling on a token that is not revocable: its `exp`
/// at most `ceiling` after `now` (checked when the token is recorded, under
/// the organisation's lock, so that a lowered ceiling applies at once).
pub fn check_ceiling(
    now: DateTime<Utc>,
    exp: DateTime<Utc>,
    revocable: bool,
    ceiling: Duration,
) -> Result<(), DomainError> {
    let ceiling = chrono::TimeDelta::from_std(ceiling).unwrap_or(chrono::TimeDelta::MAX);
    let latest = now
        .checked_add_signed(ceiling)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if revocable || exp <= latest {
        return Ok(());
    }
    Err(DomainError::invalid(
        "exp",
        format!(
            "must be at most {} seconds ahead: the organisation's limit for tokens that are not revocable",
            ceiling.num_seconds()
        ),
    ))
}

/// A validated request for a playback token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scope: Scope,
    pub window: Window,
    pub revocable: bool,
    pub restrictions: Restrictions,
    pub force_disconnect: bool,
}

/// Why a presented token is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyFailure {
    Expired,
    NotYetValid,
    Revoked,
    WrongStream,
    BadSignature,
    UnknownKid,
    Malformed,
    /// The key that signed it was revoked (RotateSigningKey revoke_previous).
    KeyRevoked,
}

/// What a verification needs to know of a signing key besides its public
/// half: whether it was revoked, and until when it verifies (a retired key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValidity {
    pub revoked: bool,
    pub verify_until: Option<DateTime<Utc>>,
}

impl KeyValidity {
    /// Whether the key verifies anything at `now`. A retired key past its
    /// `verify_until` is no key any more: as if unknown (it is no longer
    /// published either).
    pub fn check_key(&self, now: DateTime<Utc>) -> Result<(), VerifyFailure> {
        if self.revoked {
            Err(VerifyFailure::KeyRevoked)
        } else if self.verify_until.is_some_and(|until| now >= until) {
            Err(VerifyFailure::UnknownKid)
        } else {
            Ok(())
        }
    }

    /// Whether a token with this `exp`, signed by the key, can be genuine: a
    /// retired key's tokens all expire by its `verify_until`. One that claims
    /// longer was made with the key's private half after its retirement (a
    /// leak), so its signature does not count.
    pub fn check_expiry(&self, exp: i64) -> Result<(), VerifyFailure> {
        match self.verify_until {
            Some(until) if exp > until.timestamp() => Err(VerifyFailure::BadSignature),
            _ => Ok(()),
        }
    }
}

/// The time check of a verification (no leeway, like access tokens).
pub fn check_window(now: DateTime<Utc>, window: Window) -> Result<(), VerifyFailure> {
    if now >= window.exp {
        Err(VerifyFailure::Expired)
    } else if now < window.nbf {
        Err(VerifyFailure::NotYetValid)
    } else {
        Ok(())
    }
}

/// The algorithms playback tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    EdDsa,
    Rs256,
}

impl SigningAlgorithm {
    /// The JOSE name; also its spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }
}

impl FromStr for SigningAlgorithm {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(SigningAlgorithm::EdDsa),
            "RS256" => Ok(SigningAlgorithm::Rs256),
            other => Err(DomainError::Internal(format!(
                "unknown signing algorithm {other:?}"
            ))),
        }
    }
}

pub fn not_secure_organisation() -> DomainError {
    DomainError::FailedPrecondition {
        reason: "NOT_SECURE_ORGANISATION",
        message: "the organisation is not a secure organisation: enable secure playback first"
            .into(),
    }
}

pub fn not_revocable() -> DomainError {
    DomainError::FailedPrecondition {
        reason: "NOT_REVOCABLE",
        message: "the playback token was issued as not revocable: it stays valid until it expires"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    fn field_of(result: Result<Window, DomainError>) -> String {
        match result {
            Err(DomainError::InvalidArgument(v)) => v[0].description.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn lifetimes_are_limited() {
        let now = at(0);
        let day = 24 * 3600;
        let end_of_time = DateTime::from_timestamp(8_210_266_876_799, 0).expect("the latest time");
        match validity_window(now, Some(end_of_time), None, false, HOUR) {
            Err(DomainError::InvalidArgument(violations)) => assert_eq!(violations[0].field, "nbf"),
            other => panic!("an nbf near the end of time must be refused, got {other:?}"),
        }
        let window = validity_window(now, None, None, false, HOUR).expect("default");
        assert_eq!((window.nbf, window.exp), (now, at(3600)));
        assert!(validity_window(now, None, Some(at(365 * day)), false, HOUR).is_ok());
        assert!(
            field_of(validity_window(now, None, Some(at(366 * day)), false, HOUR)).contains("365")
        );
        assert!(validity_window(now, None, Some(at(day)), true, HOUR).is_ok());
        assert!(
            field_of(validity_window(now, None, Some(at(25 * 3600)), true, HOUR)).contains("24")
        );
        assert!(field_of(validity_window(now, None, Some(at(-1)), false, HOUR)).contains("future"));
        assert!(
            field_of(validity_window(
                now,
                Some(at(60)),
                Some(at(60)),
                false,
                HOUR
            ))
            .contains("nbf")
        );
        let later = validity_window(now, Some(at(600)), None, false, HOUR).expect("nbf ahead");
        assert_eq!(later.exp, at(600 + 3600));
    }

    #[test]
    fn ceilings_are_bounded_and_bind_tokens_that_are_not_revocable() {
        let day = 24 * 3600;
        assert_eq!(
            lifetime_ceiling("c", day, 0).expect("a day"),
            Duration::from_secs(86_400)
        );
        assert!(lifetime_ceiling("c", 365 * day, 0).is_ok());
        assert!(lifetime_ceiling("c", 1, 0).is_ok());
        for (seconds, nanos) in [
            (0, 0),
            (-1, 0),
            (i64::MIN, 0),
            (365 * day + 1, 0),
            (i64::MAX, 0),
            (day, 1),
            (day, -1),
        ] {
            assert!(
                lifetime_ceiling("c", seconds, nanos).is_err(),
                "{seconds}s {nanos}ns"
            );
        }
        let now = at(0);
        let ceiling = Duration::from_secs(day as u64);
        assert!(check_ceiling(now, at(day), false, ceiling).is_ok());
        assert!(check_ceiling(now, at(day + 1), false, ceiling).is_err());
        assert!(check_ceiling(now, at(day + 1), true, ceiling).is_ok());
        assert!(check_ceiling(now, at(day), false, Duration::MAX).is_ok());
    }

    #[test]
    fn a_key_verifies_until_its_verify_until_and_never_once_revoked() {
        let current = KeyValidity {
            revoked: false,
            verify_until: None,
        };
        assert_eq!(current.check_key(at(0)), Ok(()));
        assert_eq!(current.check_expiry(i64::MAX), Ok(()));
        let retired = KeyValidity {
            revoked: false,
            verify_until: Some(at(100)),
        };
        assert_eq!(retired.check_key(at(99)), Ok(()));
        assert_eq!(retired.check_key(at(100)), Err(VerifyFailure::UnknownKid));
        assert_eq!(retired.check_expiry(at(100).timestamp()), Ok(()));
        assert_eq!(
            retired.check_expiry(at(101).timestamp()),
            Err(VerifyFailure::BadSignature)
        );
        let revoked = KeyValidity {
            revoked: true,
            verify_until: Some(at(100)),
        };
        assert_eq!(revoked.check_key(at(0)), Err(VerifyFailure::KeyRevoked));
    }

    #[test]
    fn the_window_is_checked_without_leeway() {
        let window = Window {
            nbf: at(10),
            exp: at(20),
        };
        assert_eq!(check_window(at(9), window), Err(VerifyFailure::NotYetValid));
        assert_eq!(check_window(at(10), window), Ok(()));
        assert_eq!(check_window(at(20), window), Err(VerifyFailure::Expired));
    }

    #[test]
    fn scopes_cover_their_streams_only() {
        let streams = Scope::streams("s", vec!["a".into(), "b".into()]).expect("streams");
        assert!(streams.allows("a", ""));
        assert!(!streams.allows("c", ""));
        assert!(!streams.allows("", ""));
        let group = Scope::group("g", "live".into()).expect("group");
        assert!(group.allows("", ""));
        assert!(group.allows("a", "live"));
        assert!(!group.allows("a", ""));
        assert!(!group.allows("a", "other"));
        assert!(Scope::Organisation.allows("anything", ""));
        assert!(Scope::streams("s", vec![]).is_err());
        assert!(Scope::streams("s", vec!["x".into(); MAX_STREAMS + 1]).is_err());
        assert!(Scope::group("g", String::new()).is_err());
    }

    #[test]
    fn restrictions_are_validated() {
        assert!(Restrictions::parse("", "", "", "").is_ok());
        let ok = Restrictions::parse("*.example.com", "10.0.0.0/8", "vip", "viewer-1").expect("ok");
        assert_eq!(ok.ip.as_deref(), Some("10.0.0.0/8"));
        assert!(Restrictions::parse("", "2001:db8::1", "", "").is_ok());
        match Restrictions::parse("bad domain", "10.0.0.0/33", "", "") {
            Err(DomainError::InvalidArgument(v)) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
