//! The use cases: what each call of the contract does, in the service's own
//! terms. The gRPC handlers in `api` validate a request, make one call into
//! here, and convert the answer; every change goes through the store's one
//! write path ([`crate::store::write`]), which re-verifies the caller at
//! commit.

pub(crate) mod api_tokens;
pub(crate) mod audit;
pub(crate) mod authorize;
pub mod bench;
pub(crate) mod changes;
pub(crate) mod confirm;
pub mod credentials;
pub(crate) mod invites;
pub(crate) mod organisation;
pub mod outbox;
pub(crate) mod playback;
pub mod provisioning;
pub mod sessions;
pub(crate) mod users;
