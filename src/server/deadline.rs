//! The caller's deadline (`grpc-timeout`), made the deadline of the call's
//! database work (see [`crate::store::deadline`]): a database that does not
//! answer fails the call with UNAVAILABLE shortly before the caller gives
//! up, rather than leaving it to hang until then.

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::store::deadline;

/// How much before the caller's deadline the database work is due: a tenth
/// of the time the caller gave, at most this much, so that the answer
/// arrives while the caller still waits.
const MAX_MARGIN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithDeadline { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WithDeadline<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for WithDeadline<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Instant, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let due = grpc_timeout(request.headers()).map(|timeout| {
            let margin = (timeout / 10).min(MAX_MARGIN);
            Instant::now() + (timeout - margin)
        });
        // No deadline from the caller: far away, the store's bound rules.
        let due = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        deadline::scope(due, self.inner.call(request))
    }
}

/// The `grpc-timeout` of `headers`: at most 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), as gRPC over HTTP/2 defines it; `None` when absent
/// or malformed (tonic ignores a malformed one too).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "grpc-timeout",
            http::HeaderValue::from_str(value).expect("header"),
        );
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_says() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in [
            "",
            "S",
            "5",
            "5s",
            "-5S",
            "+5S",
            "123456789S",
            "1.5S",
            "5 S",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
