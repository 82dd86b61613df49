//! usermgmt: the users, roles and access tokens of a streaming cloud's
//! organisations, served over gRPC.

pub(crate) mod api;
pub mod app;
pub mod auth;
pub(crate) mod bounded_cache;
pub mod config;
pub mod domain;
pub mod mail;
pub(crate) mod metrics;
pub mod sealing;
pub mod server;
pub(crate) mod status;
pub mod store;
pub(crate) mod tower_util;

#[cfg(test)]
mod props;
#[cfg(test)]
mod redaction_tests;

/// The contract (generated code, descriptors, metadata names), from its own
/// crate.
pub use usermgmt_proto as proto;
