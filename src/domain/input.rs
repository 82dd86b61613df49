//! Rules that every value of every request obeys, whatever its field: text
//! holds no NUL (PostgreSQL's text cannot store it), and timestamps and
//! durations lie within the ranges that `google.protobuf.Timestamp` and
//! `Duration` define, so that no arithmetic on them can overflow and
//! PostgreSQL can store them. The gRPC layer applies them to every field of
//! a request before any handler runs (see `api::screen`); the conversions of
//! the handlers apply them again.

use chrono::{DateTime, Utc};

use super::error::DomainError;

/// 0001-01-01T00:00:00Z, the earliest valid `google.protobuf.Timestamp`.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the latest valid `google.protobuf.Timestamp`.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// About 10,000 years, the longest valid `google.protobuf.Duration`.
pub const MAX_DURATION_SECONDS: i64 = 315_576_000_000;
const NANOS_PER_SECOND: i32 = 1_000_000_000;

/// Text of any request field: anything but NUL.
pub fn text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.contains('\0') {
        Err(DomainError::invalid(
            field,
            "must not contain NUL characters",
        ))
    } else {
        Ok(())
    }
}

/// A timestamp of a request, within 0001-01-01 and 9999-12-31, its nanos
/// within a second.
pub fn timestamp(field: &str, seconds: i64, nanos: i32) -> Result<DateTime<Utc>, DomainError> {
    let invalid = || {
        DomainError::invalid(
            field,
            "must be a timestamp from 0001-01-01 to 9999-12-31 with nanos from 0 to 999999999",
        )
    };
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds) {
        return Err(invalid());
    }
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < NANOS_PER_SECOND.unsigned_abs())
        .ok_or_else(invalid)?;
    DateTime::from_timestamp(seconds, nanos).ok_or_else(invalid)
}

/// A duration of a request, within ±10,000 years, its nanos within a second
/// and of the same sign as its seconds.
pub fn duration(field: &str, seconds: i64, nanos: i32) -> Result<(), DomainError> {
    let in_range = (-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&seconds)
        && (-NANOS_PER_SECOND + 1..NANOS_PER_SECOND).contains(&nanos)
        && !(seconds > 0 && nanos < 0 || seconds < 0 && nanos > 0);
    if in_range {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "must be a duration of at most 10000 years with nanos within a second, of the same sign",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_to_the_protobuf_range() {
        assert!(timestamp("t", 0, 0).is_ok());
        assert!(timestamp("t", MIN_TIMESTAMP_SECONDS, 0).is_ok());
        assert!(timestamp("t", MAX_TIMESTAMP_SECONDS, 999_999_999).is_ok());
        for (seconds, nanos) in [
            (MIN_TIMESTAMP_SECONDS - 1, 0),
            (MAX_TIMESTAMP_SECONDS + 1, 0),
            (8_210_266_876_799, 0),
            (i64::MIN, 0),
            (i64::MAX, 0),
            (0, -1),
            (0, 1_000_000_000),
            (0, i32::MAX),
        ] {
            match timestamp("nbf", seconds, nanos) {
                Err(DomainError::InvalidArgument(v)) => assert_eq!(v[0].field, "nbf"),
                other => panic!("{seconds}.{nanos}: {other:?}"),
            }
        }
    }

    #[test]
    fn durations_keep_to_the_protobuf_range() {
        assert!(duration("d", 0, 0).is_ok());
        assert!(duration("d", MAX_DURATION_SECONDS, 999_999_999).is_ok());
        assert!(duration("d", -MAX_DURATION_SECONDS, -999_999_999).is_ok());
        assert!(duration("d", 0, -5).is_ok());
        for (seconds, nanos) in [
            (MAX_DURATION_SECONDS + 1, 0),
            (i64::MIN, 0),
            (1, -1),
            (-1, 1),
            (0, 1_000_000_000),
            (0, i32::MIN),
        ] {
            assert!(duration("d", seconds, nanos).is_err(), "{seconds}.{nanos}");
        }
    }

    #[test]
    fn text_holds_no_nul() {
        assert!(text("f", "").is_ok());
        assert!(text("f", "\u{202E}é\u{1F600}").is_ok());
        assert!(text("f", "a\0b").is_err());
    }
}
