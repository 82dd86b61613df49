//! OpenTelemetry: with an OTLP endpoint set, every call's span reaches it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

/// An OTLP trace collector that keeps what it receives.
#[derive(Clone, Default)]
pub(crate) struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .expect("collector")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// A collector listening on a port of its own; returns its endpoint.
    pub(crate) async fn start() -> (Self, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, endpoint)
    }

    /// Everything received so far, as text: span names, attributes,
    /// events and status messages.
    pub(crate) fn text(&self) -> String {
        format!("{:?}", self.received.lock().expect("collector"))
    }

    /// Waits (at most 15 s) until a `call` span of `method` arrived.
    pub(crate) async fn wait_for(&self, method: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let methods = self.call_methods();
            if methods
                .iter()
                .any(|(service, m)| service == "usermgmt" && m == method)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no span of {method} reached the collector: {methods:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `method` attributes of the `call` spans received so far, and the
    /// service name they came from.
    fn call_methods(&self) -> Vec<(String, String)> {
        let received = self.received.lock().expect("collector");
        let mut methods = Vec::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref()?.value.clone());
                let service = match service {
                    Some(Value::StringValue(name)) => name,
                    _ => String::new(),
                };
                for scope in &resource_spans.scope_spans {
                    for span in scope.spans.iter().filter(|s| s.name == "call") {
                        for attribute in span.attributes.iter().filter(|a| a.key == "method") {
                            if let Some(Value::StringValue(method)) =
                                attribute.value.as_ref().and_then(|v| v.value.clone())
                            {
                                methods.push((service.clone(), method));
                            }
                        }
                    }
                }
            }
        }
        methods
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_exported_as_spans_to_the_otlp_endpoint() {
    let (collector, endpoint) = Collector::start().await;

    let db = TestDb::new().await;
    let log = std::env::temp_dir().join(format!("usermgmt-otel-{}.log", std::process::id()));
    let replica = Replica::start_logged(
        &db.url,
        &[
            ("USERMGMT_OTEL_ENDPOINT", endpoint.as_str()),
            ("USERMGMT_LOG", "info"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &log,
    )
    .await;
    let mut health = HealthClient::new(channel(replica.addr).await);
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");

    collector.wait_for("/grpc.health.v1.Health/Check").await;
    let _ = std::fs::remove_file(&log);
}
