use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{convert, principal, request_id};
use crate::app::confirm::Step;
use crate::app::organisation::{OrganisationChanges, Organisations};
use crate::domain::DomainError;
use crate::domain::playback::{MAX_LIFETIME, lifetime_ceiling};
use crate::domain::user::validate_organisation_name;
use crate::proto::{self, organisation_service_server::OrganisationService};

pub struct OrganisationApi {
    pub organisations: Organisations,
}

/// The changes an AIP-134 update asks for: the fields named in the mask, or
/// the fields set to a non-default value when the mask is empty.
fn requested_changes(
    organisation: &proto::Organisation,
    mask: Option<&prost_types::FieldMask>,
) -> Result<OrganisationChanges, DomainError> {
    let paths: Vec<&str> = mask
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let (name, secure_playback, max_lifetime) = if paths.is_empty() {
        (
            !organisation.name.is_empty(),
            organisation.secure_playback,
            organisation.max_non_revocable_lifetime.is_some(),
        )
    } else {
        let mut wanted = (false, false, false);
        for path in paths {
            match path {
                "name" => wanted.0 = true,
                "secure_playback" => wanted.1 = true,
                "max_non_revocable_lifetime" => wanted.2 = true,
                "*" => wanted = (true, true, true),
                other => {
                    // Echo at most a short prefix: the error travels in a
                    // header, and the caller's input is unbounded.
                    let shown: String = other.chars().take(64).collect();
                    return Err(DomainError::invalid(
                        "update_mask",
                        format!(
                            "{shown:?} cannot be changed: use name, secure_playback, \
                             max_non_revocable_lifetime or *"
                        ),
                    ));
                }
            }
        }
        wanted
    };
    Ok(OrganisationChanges {
        name: name
            .then(|| validate_organisation_name("organisation.name", &organisation.name))
            .transpose()?,
        secure_playback: secure_playback.then_some(organisation.secure_playback),
        max_non_revocable_lifetime: max_lifetime
            .then(|| max_non_revocable_lifetime(organisation.max_non_revocable_lifetime))
            .transpose()?,
    })
}

/// The ceiling as requested; unset (named in the mask) is the default.
fn max_non_revocable_lifetime(
    requested: Option<prost_types::Duration>,
) -> Result<Duration, DomainError> {
    match requested {
        None => Ok(MAX_LIFETIME),
        Some(duration) => lifetime_ceiling(
            "organisation.max_non_revocable_lifetime",
            duration.seconds,
            duration.nanos,
        ),
    }
}

#[tonic::async_trait]
impl OrganisationService for OrganisationApi {
    async fn get_organisation(
        &self,
        request: Request<proto::GetOrganisationRequest>,
    ) -> Result<Response<proto::GetOrganisationResponse>, Status> {
        let caller = principal(&request)?;
        let organisation = self.organisations.get(&caller).await?;
        Ok(Response::new(proto::GetOrganisationResponse {
            organisation: Some(convert::organisation(&organisation)),
        }))
    }

    async fn update_organisation(
        &self,
        request: Request<proto::UpdateOrganisationRequest>,
    ) -> Result<Response<proto::UpdateOrganisationResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let organisation = request
            .organisation
            .ok_or_else(|| DomainError::invalid("organisation", "must be set"))?;
        let changes = requested_changes(&organisation, request.update_mask.as_ref())?;
        let etag = convert::optional_text("organisation.etag", &organisation.etag, 64)?;
        let updated = self
            .organisations
            .update(&caller, request_id, &changes, etag.as_deref())
            .await?;
        Ok(Response::new(proto::UpdateOrganisationResponse {
            organisation: Some(convert::organisation(&updated)),
        }))
    }

    async fn rotate_api_key(
        &self,
        request: Request<proto::RotateApiKeyRequest>,
    ) -> Result<Response<proto::RotateApiKeyResponse>, Status> {
        use proto::rotate_api_key_response::Outcome;
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let confirmation_token = request.into_inner().confirmation_token;
        let outcome = match self
            .organisations
            .rotate_api_key(&caller, request_id, &confirmation_token)
            .await?
        {
            Step::ConfirmationRequired(confirmation) => {
                Outcome::ConfirmationRequired(proto::ApiKeyConfirmation {
                    confirmation_token: confirmation.token,
                    expires_at: Some(convert::timestamp(confirmation.expires_at)),
                    warning: confirmation.warning,
                })
            }
            Step::Done(rotated) => Outcome::Rotated(proto::RotatedApiKey {
                api_key: rotated.api_key,
                api_key_fingerprint: rotated.fingerprint,
                rotated_at: rotated.rotated_at.map(convert::timestamp),
            }),
        };
        Ok(Response::new(proto::RotateApiKeyResponse {
            outcome: Some(outcome),
        }))
    }
}
