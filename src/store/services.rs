//! Internal services registered to call `AuthService.Authorize`.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::audit::Audit;
use super::schema::service_credentials;
use super::write::Change;
use super::{Store, db_error, is_unique_violation};
use crate::domain::DomainError;
use crate::domain::audit::{SERVICE_REGISTER, SERVICE_REVOKE};
use crate::domain::change::DEPLOYMENT;

/// The audit event of a service's registration or revocation: a change of
/// the deployment's feed (services belong to no organisation), naming the
/// service by its id and name, never its key.
fn service_audit(action: &'static str, id: Uuid, name: &str) -> Audit {
    Audit {
        action,
        target_type: "service",
        target_id: id.to_string(),
        target_label: name.to_owned(),
        before: None,
        after: None,
        owner: None,
    }
}

impl Store {
    /// Registers a service under `name` with the hash of its key.
    pub async fn register_service(&self, name: &str, key_hash: &[u8]) -> Result<(), DomainError> {
        self.operate(async |conn| {
            let id: Uuid = diesel::insert_into(service_credentials::table)
                .values((
                    service_credentials::id.eq(Uuid::now_v7()),
                    service_credentials::name.eq(name),
                    service_credentials::secret_hash.eq(key_hash),
                ))
                .returning(service_credentials::id)
                .get_result(conn.pg())
                .await
                .map_err(|error| {
                    if is_unique_violation(&error) {
                        DomainError::AlreadyExists {
                            resource: "service",
                            message: format!(
                                "a service named {name:?} is registered: revoke it first"
                            ),
                        }
                    } else {
                        db_error(error)
                    }
                })?;
            Ok(Change::unchanged(()).and_in(DEPLOYMENT, service_audit(SERVICE_REGISTER, id, name)))
        })
        .await
    }

    /// Revokes the service `name`; its key stops working on the next call,
    /// on every replica. Its name can then be registered again.
    pub async fn revoke_service(&self, name: &str) -> Result<(), DomainError> {
        self.operate(async |conn| {
            let revoked: Vec<Uuid> = diesel::delete(
                service_credentials::table.filter(service_credentials::name.eq(name)),
            )
            .returning(service_credentials::id)
            .get_results(conn.pg())
            .await?;
            if revoked.is_empty() {
                return Err(DomainError::NotFound("service"));
            }
            let audits = revoked
                .into_iter()
                .map(|id| service_audit(SERVICE_REVOKE, id, name));
            let change = audits.fold(Change::unchanged(()).settling(), |change, audit| {
                change.and_in(DEPLOYMENT, audit)
            });
            Ok(change)
        })
        .await?;
        tracing::info!(service = name, at = %Utc::now(), "service revoked");
        Ok(())
    }

    /// The name of the service whose key has this hash.
    pub async fn service_by_key(&self, key_hash: &[u8]) -> Result<Option<String>, DomainError> {
        self.read_through(
            |cache| cache.service(key_hash),
            async || {
                let mut conn = self.conn().await?;
                service_credentials::table
                    .filter(service_credentials::secret_hash.eq(key_hash))
                    .filter(service_credentials::revoked_at.is_null())
                    .select(service_credentials::name)
                    .first(&mut conn)
                    .await
                    .optional()
                    .map_err(db_error)
            },
            |cache, epoch, name: &String| cache.put_service(epoch, key_hash, name),
        )
        .await
    }
}
