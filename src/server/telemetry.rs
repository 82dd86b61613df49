//! Request ids, and one span, one log line and the metrics of every call,
//! at a level that fits the outcome: client errors are not ERRORs.
//!
//! tower-http sets the request id and returns it in the response. The span,
//! the log line and the metrics stay hand-written: `TraceLayer`'s response
//! callback does not see the request, whose method the metrics are counted
//! by, and it keeps the span open until the response body is sent, which
//! would change the spans exported.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderValue;
use tonic::body::Body;
use tower::util::MapRequest;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestId, PropagateRequestIdLayer, RequestId, SetRequestId,
    SetRequestIdLayer,
};
use tracing::Instrument as _;
use uuid::Uuid;

pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether the caller's request id is one to keep: otherwise the call gets a
/// new one.
fn is_sane(id: &HeaderValue) -> bool {
    id.to_str().is_ok_and(|id| {
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    })
}

/// Drops a request id that is not [sane](is_sane), for [`SetRequestId`] to
/// replace.
fn drop_insane_request_id(mut request: http::Request<Body>) -> http::Request<Body> {
    if let Some(id) = request.headers().get(REQUEST_ID_HEADER)
        && !is_sane(id)
    {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

/// A new id: this process's random prefix and a counter. Unique without a
/// call to the system's random source per request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| Uuid::new_v4().simple().to_string()[..16].to_owned());
        let id = format!("{prefix}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed));
        HeaderValue::try_from(id).ok().map(RequestId::new)
    }
}

/// The call's request id (the caller's `x-request-id` if it sent a sane one,
/// otherwise a new one) in its extensions, for handlers, and in its response;
/// then its span, log line and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct TelemetryLayer;

type WithRequestId<S> = MapRequest<
    SetRequestId<PropagateRequestId<S>, NewRequestId>,
    fn(http::Request<Body>) -> http::Request<Body>,
>;

impl<S> Layer<S> for TelemetryLayer {
    type Service = WithRequestId<Telemetry<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBuilder::new()
            .map_request(drop_insane_request_id as fn(_) -> _)
            .layer(SetRequestIdLayer::x_request_id(NewRequestId))
            .layer(PropagateRequestIdLayer::x_request_id())
            .service(Telemetry { inner })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Telemetry<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Telemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or_default();
        let span =
            tracing::info_span!("call", method = %request.uri().path(), request_id = %request_id);
        let path = request.uri().path().to_owned();
        Box::pin(
            async move {
                let started = Instant::now();
                let result = inner.call(request).await;
                let elapsed = started.elapsed();
                let micros = elapsed.as_micros() as u64;
                match &result {
                    Ok(response) => {
                        let code = grpc_code(response.headers());
                        crate::metrics::metrics().record_call(&path, code, elapsed);
                        log_outcome(code, micros);
                    }
                    Err(error) => {
                        crate::metrics::metrics().record_call(&path, tonic::Code::Unknown, elapsed);
                        tracing::error!(%error, micros, "call failed in transport")
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The status of a unary response: in the headers when the call failed
/// (trailers-only), otherwise OK (sent later, in the trailers).
fn grpc_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<i32>().ok())
        .map(tonic::Code::from)
        .unwrap_or(tonic::Code::Ok)
}

fn log_outcome(code: tonic::Code, micros: u64) {
    use tonic::Code::*;
    match code {
        Ok => tracing::debug!(code = ?code, micros, "call finished"),
        Internal | Unknown | DataLoss => tracing::error!(code = ?code, micros, "call failed"),
        Unavailable | DeadlineExceeded | ResourceExhausted => {
            tracing::warn!(code = ?code, micros, "call failed")
        }
        _ => tracing::info!(code = ?code, micros, "call refused"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tower::{ServiceExt as _, service_fn};

    use super::*;

    /// Log output collected in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_log_line_of_a_call_carries_its_request_id() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let handler = service_fn(|_request: http::Request<Body>| async {
            tracing::info!("inside the handler");
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let request = http::Request::builder()
            .uri("/usermgmt.v1.AuthService/WhoAmI")
            .header(REQUEST_ID_HEADER, "req-42")
            .body(Body::empty())
            .expect("request");
        let response = TelemetryLayer
            .layer(handler)
            .oneshot(request)
            .await
            .expect("response");
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-42");

        let output =
            String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8 logs");
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 2, "{output}");
        for line in lines {
            assert!(line.contains("request_id=req-42"), "{line}");
        }
    }

    #[tokio::test]
    async fn a_request_id_that_is_not_sane_is_replaced() {
        let handler = service_fn(|request: http::Request<Body>| async move {
            let id = request.extensions().get::<RequestId>().cloned();
            Ok::<_, std::convert::Infallible>(http::Response::new(id))
        });
        for sent in ["", "has space", &"x".repeat(MAX_REQUEST_ID_LEN + 1)] {
            let request = http::Request::builder()
                .uri("/usermgmt.v1.AuthService/WhoAmI")
                .header(REQUEST_ID_HEADER, sent)
                .body(Body::empty())
                .expect("request");
            let response = TelemetryLayer
                .layer(handler)
                .oneshot(request)
                .await
                .expect("response");
            let returned = response.headers()[REQUEST_ID_HEADER].to_str().expect("id");
            let (prefix, counter) = returned.split_once('-').expect("prefix-counter");
            assert_eq!(prefix.len(), 16, "{returned}");
            assert!(u64::from_str_radix(counter, 16).is_ok(), "{returned}");
            let seen = response.body().as_ref().expect("the handler's id");
            assert_eq!(seen.header_value(), returned);
        }
    }
}
