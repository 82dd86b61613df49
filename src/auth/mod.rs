//! Authentication and authorization: access tokens, passwords, the access
//! rule of every RPC and the check that runs before every call.

pub(crate) mod access;
pub mod authenticator;
pub(crate) mod layer;
pub(crate) mod opaque;
pub mod passwords;
pub(crate) mod peer;
pub mod playback;
pub(crate) mod principal;
pub mod ratelimit;
pub mod tokens;
pub mod usage;

pub use access::Access;
pub use authenticator::{Admitted, Authenticator, Credential, ServiceCaller, Verdict};
pub(crate) use layer::AuthLayer;
pub use principal::Principal;
