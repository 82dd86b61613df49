//! Size limits of calls. tonic refuses a request message above
//! `max_decoding_message_size` with `OUT_OF_RANGE`; [`oversize_layer`]
//! reports it as `RESOURCE_EXHAUSTED`, the code gRPC uses for a message that
//! is too large. (Metadata above `--max-header-list-bytes` is refused by
//! HTTP/2 itself.)

use http::HeaderValue;
use tonic::body::Body;
use tower::util::MapResponseLayer;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
/// `tonic::Code::OutOfRange` and `ResourceExhausted`, as sent on the wire.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

type Recode = fn(http::Response<Body>) -> http::Response<Body>;

/// Recodes tonic's refusal of a too large message as `RESOURCE_EXHAUSTED`.
pub(crate) fn oversize_layer() -> MapResponseLayer<Recode> {
    MapResponseLayer::new(|mut response: http::Response<Body>| {
        if is_oversize_refusal(response.headers()) {
            response
                .headers_mut()
                .insert(GRPC_STATUS, HeaderValue::from_static(RESOURCE_EXHAUSTED));
        }
        response
    })
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
