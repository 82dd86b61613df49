//! Reading the caller's organisation's audit log.

use uuid::Uuid;

use crate::auth::Principal;
use crate::domain::DomainError;
use crate::domain::audit::{AuditEvent, AuditFilter, SequenceCursor};
use crate::store::Store;

pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// A page of events matching `filter`, newest first, before `before`.
    pub async fn list(
        &self,
        caller: &Principal,
        filter: &AuditFilter,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        self.store
            .list_audit_events(caller.organisation_id, filter, before, limit)
            .await
    }

    /// A page of the events of the change feed's changes after
    /// `after_sequence` that match `filter`, oldest first, after `after`.
    pub async fn list_by_sequence(
        &self,
        caller: &Principal,
        filter: &AuditFilter,
        after_sequence: i64,
        after: Option<SequenceCursor>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        self.store
            .list_audit_events_by_sequence(
                caller.organisation_id,
                filter,
                after_sequence,
                after,
                limit,
            )
            .await
    }
}
