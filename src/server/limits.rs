//! Size limits of calls. tonic refuses a request message above
//! `max_decoding_message_size` with `OUT_OF_RANGE`; this layer reports it as
//! `RESOURCE_EXHAUSTED`, the code gRPC uses for a message that is too large.
//! (Metadata above `--max-header-list-bytes` is refused by HTTP/2 itself.)

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tower::{Layer, Service};

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
/// `tonic::Code::OutOfRange` and `ResourceExhausted`, as sent on the wire.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

#[derive(Debug, Clone, Default)]
pub struct OversizeLayer;

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Oversize<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
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
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if is_oversize_refusal(response.headers()) {
                response
                    .headers_mut()
                    .insert(GRPC_STATUS, HeaderValue::from_static(RESOURCE_EXHAUSTED));
            }
            Ok(response)
        })
    }
}

/// Whether the headers carry tonic's refusal of a too large message.
fn is_oversize_refusal(headers: &http::HeaderMap) -> bool {
    let status = headers.get(GRPC_STATUS).and_then(|v| v.to_str().ok());
    let message = headers
        .get(GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    status == Some(OUT_OF_RANGE)
        && (message.contains("message length too large")
            || message.contains("message%20length%20too%20large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_size_refusal_is_recoded() {
        let mut headers = http::HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("11"));
        headers.insert(
            GRPC_MESSAGE,
            HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large"),
        );
        assert!(is_oversize_refusal(&headers));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("page out of range"));
        assert!(!is_oversize_refusal(&headers));
        headers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert!(!is_oversize_refusal(&headers));
    }
}
