//! Request ids and one log line per call, at a level that fits the outcome:
//! client errors are not ERRORs.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderValue;
use tower::{Layer, Service};
use tracing::Instrument as _;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of one call: the caller's `x-request-id` if it sent a sane one,
/// otherwise a new one. Handlers find it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A new id: this process's random prefix and a counter. Unique without a
    /// call to the system's random source per request.
    fn generate() -> Self {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| Uuid::new_v4().simple().to_string()[..16].to_owned());
        RequestId(format!(
            "{prefix}-{:x}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn from_headers(headers: &http::HeaderMap) -> Self {
        headers
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN)
            .filter(|id| {
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            })
            .map(|id| RequestId(id.to_owned()))
            .unwrap_or_else(RequestId::generate)
    }
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryLayer;

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Telemetry<S> {
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let request_id = RequestId::from_headers(request.headers());
        let span =
            tracing::info_span!("call", method = %request.uri().path(), request_id = %request_id.0);
        request.extensions_mut().insert(request_id.clone());
        let path = request.uri().path().to_owned();
        Box::pin(
            async move {
                let started = Instant::now();
                let mut result = inner.call(request).await;
                let elapsed = started.elapsed();
                let micros = elapsed.as_micros() as u64;
                match &mut result {
                    Ok(response) => {
                        let code = grpc_code(response.headers());
                        crate::metrics::metrics().record_call(&path, code, elapsed);
                        log_outcome(code, micros);
                        if let Ok(value) = HeaderValue::from_str(&request_id.0) {
                            response.headers_mut().insert(REQUEST_ID_HEADER, value);
                        }
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

        let handler = service_fn(|_request: http::Request<()>| async {
            tracing::info!("inside the handler");
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let request = http::Request::builder()
            .uri("/usermgmt.v1.AuthService/WhoAmI")
            .header(REQUEST_ID_HEADER, "req-42")
            .body(())
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
}
