//! The rules of the service, free of I/O: roles and their permissions, the
//! shapes of users and organisations, validation and the error vocabulary.

pub mod actor;
pub mod api_token;
pub mod audit;
pub mod change;
pub mod confirmation;
pub mod email;
pub mod error;
pub mod fingerprint;
pub mod input;
pub mod invariants;
pub mod invite;
pub mod paging;
pub mod permission;
pub mod playback;
pub mod role;
pub mod session;
pub mod text;
pub mod user;

pub use error::{DomainError, FieldViolation};
pub use permission::Permission;
pub use role::Role;
