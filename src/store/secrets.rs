use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::service_secrets;
use super::{Store, db_error};
use crate::domain::DomainError;

impl Store {
    /// The shared secret `name`: the stored one, or `candidate` if none was
    /// stored yet. Replicas starting together agree on one value.
    pub async fn shared_secret(
        &self,
        name: &str,
        candidate: &[u8],
    ) -> Result<Vec<u8>, DomainError> {
        let mut conn = self.conn().await?;
        diesel::insert_into(service_secrets::table)
            .values((
                service_secrets::name.eq(name),
                service_secrets::value.eq(candidate),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        service_secrets::table
            .find(name)
            .select(service_secrets::value)
            .first(&mut conn)
            .await
            .map_err(db_error)
    }
}
