//! `usermgmt healthcheck`: asks a server's gRPC health service whether it is
//! SERVING, for container health checks (no grpc_health_probe needed).

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Ok when the server at `url` reports `service` ("" for the server as a
/// whole) SERVING within `timeout`; otherwise why not.
pub async fn check(url: &str, service: &str, timeout: Duration) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid URL {url}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| format!("health check failed: {}", status.message()))?
        .into_inner()
        .status;
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("{url} is {}", other.as_str_name())),
        Err(_) => Err(format!("{url} answered an unknown status {status}")),
    }
}
