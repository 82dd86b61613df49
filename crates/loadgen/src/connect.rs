//! Connections: loopback only, bounded in time.

use std::error::Error;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::BoxError;
use crate::cli::Args;

/// How long one call may take before it counts as an error; keeps every
/// measurement bounded in time even if the server stalls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn loopback_endpoint(addr: &str) -> Result<Endpoint, BoxError> {
    require_loopback(addr)?;
    Ok(Endpoint::from_shared(addr.to_owned())
        .map_err(|e| format!("invalid address {addr:?}: {}", error_chain(&e)))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT))
}

/// Refuses anything but a plain-HTTP loopback address.
pub fn require_loopback(addr: &str) -> Result<(), BoxError> {
    let uri: http::Uri = addr
        .parse()
        .map_err(|e| format!("invalid --addr {addr:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--addr {addr:?} must start with http:// (loopback, no TLS)").into());
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--addr {addr:?} has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "--addr {addr:?}: refusing to load a non-loopback host ({host}); \
             use 127.0.0.1, ::1 or localhost"
        )
        .into());
    }
    Ok(())
}

/// `--connections` channels: each `connect` opens its own HTTP/2
/// connection, and clones of a Channel share it.
pub async fn open_channels(endpoint: &Endpoint, args: &Args) -> Result<Vec<Channel>, BoxError> {
    let mut channels = Vec::with_capacity(args.connections as usize);
    for index in 0..args.connections {
        let channel = endpoint.connect().await.map_err(|e| {
            format!(
                "cannot open connection {} to {}: {}",
                index + 1,
                args.addr,
                error_chain(&e)
            )
        })?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Waits until the server reports SERVING; returns how long that took.
pub async fn wait_serving(endpoint: &Endpoint) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|response| response.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return Ok(started.elapsed());
            }
        }
        if Instant::now() > deadline {
            return Err("the server did not become SERVING within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An error with its sources, e.g. "transport error: tcp connect error: …".
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
