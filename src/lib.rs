//! usermgmt: the users, roles and access tokens of a streaming cloud's
//! organisations, served over gRPC.

pub(crate) mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod healthcheck;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod server;
pub(crate) mod status;
pub mod store;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod web;

#[cfg(test)]
mod props;
#[cfg(test)]
mod redaction_tests;

/// The generated code of the contract in `proto/usermgmt/v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("usermgmt.v1");

    /// The contract's descriptors, for reflection and tests.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("usermgmt_descriptor");

    /// Every RPC of the contract, as `/package.Service/Method` (the path of
    /// its HTTP/2 requests), from the compiled descriptors.
    pub fn rpc_paths() -> Result<Vec<String>, prost::DecodeError> {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        Ok(paths)
    }
}
