//! The `usermgmt.v1` gRPC contract: the code generated from `proto/` (messages,
//! clients and servers), its descriptors, and the names of the call metadata
//! that carry credentials. The service, its tests and the load generator all
//! build on this crate.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("usermgmt.v1");
}

pub use generated::*;

/// The call metadata that carries a credential.
pub mod metadata {
    /// `authorization: Bearer <access token>`.
    pub const BEARER: &str = "authorization";
    /// `x-bintu-token: <access token>`, the header the product's clients use.
    pub const BINTU_TOKEN: &str = "x-bintu-token";
    /// `x-bintu-apikey: <organisation API key>`.
    pub const API_KEY: &str = "x-bintu-apikey";
    /// `x-usermgmt-service-key: <internal service key>`, for Authorize.
    pub const SERVICE_KEY: &str = "x-usermgmt-service-key";
    /// `x-usermgmt-change-token: <resume token>`, in a write's response: the
    /// change feed's token of the change the write committed.
    pub const CHANGE_TOKEN: &str = "x-usermgmt-change-token";
    /// `x-usermgmt-change-sequence: <sequence>`, beside it: that change's
    /// sequence in its organisation's feed.
    pub const CHANGE_SEQUENCE: &str = "x-usermgmt-change-sequence";
}

/// The contract's descriptors, for reflection and tests.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("usermgmt_descriptor");

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
