//! gRPC-Web for browsers: tonic-web translates `application/grpc-web*`
//! requests, and CORS lets the configured origins call from a page.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::telemetry::REQUEST_ID_HEADER;
use crate::auth::authenticator::{API_KEY_HEADER, BINTU_TOKEN_HEADER, SERVICE_KEY_HEADER};

/// CORS for `origins` (`https://dashboard.example.com`, or `*` for any).
/// None: no origin may call from a browser page (same-origin and non-browser
/// clients are unaffected).
pub(crate) fn cors_layer(origins: &[String]) -> Result<CorsLayer, String> {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin.trim_end_matches('/'))
                    .map_err(|_| format!("invalid CORS origin {origin:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    let allow_headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
        BINTU_TOKEN_HEADER,
        API_KEY_HEADER,
        SERVICE_KEY_HEADER,
        REQUEST_ID_HEADER,
    ]
    .map(HeaderName::from_static);
    let expose_headers = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        REQUEST_ID_HEADER,
        crate::proto::metadata::CHANGE_TOKEN,
        crate::proto::metadata::CHANGE_SEQUENCE,
    ]
    .map(HeaderName::from_static);
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST])
        .allow_headers(allow_headers)
        .expose_headers(expose_headers)
        .max_age(Duration::from_secs(24 * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_header_values() {
        assert!(cors_layer(&[]).is_ok());
        assert!(cors_layer(&["*".into()]).is_ok());
        assert!(cors_layer(&["https://dashboard.example.com".into()]).is_ok());
        assert!(cors_layer(&["https://bad\nexample.com".into()]).is_err());
    }
}
