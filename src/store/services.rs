//! Internal services registered to call `AuthService.Authorize`.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::service_credentials;
use super::write::Change;
use super::{Store, db_error, is_unique_violation};
use crate::domain::DomainError;

impl Store {
    /// Registers a service under `name` with the hash of its key.
    pub async fn register_service(&self, name: &str, key_hash: &[u8]) -> Result<(), DomainError> {
        self.operate(async |conn| {
            diesel::insert_into(service_credentials::table)
                .values((
                    service_credentials::id.eq(Uuid::now_v7()),
                    service_credentials::name.eq(name),
                    service_credentials::secret_hash.eq(key_hash),
                ))
                .execute(conn.pg())
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
            Ok(Change::unchanged(()))
        })
        .await
    }

    /// Revokes the service `name`; its key stops working on the next call,
    /// on every replica. Its name can then be registered again.
    pub async fn revoke_service(&self, name: &str) -> Result<(), DomainError> {
        self.operate(async |conn| {
            let revoked = diesel::delete(
                service_credentials::table.filter(service_credentials::name.eq(name)),
            )
            .execute(conn.pg())
            .await?;
            if revoked == 0 {
                return Err(DomainError::NotFound("service"));
            }
            Ok(Change::unchanged(()).settling())
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
