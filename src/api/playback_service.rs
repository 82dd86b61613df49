use std::sync::Arc;

use chrono::Utc;
use tonic::{Request, Response, Status};

use super::{convert, principal, request_id};
use crate::app::playback::{PlaybackSettings, PlaybackTokens, RevokeTarget};
use crate::auth::playback::{JwkParts, PlaybackClaims, jwk_parts};
use crate::domain::DomainError;
use crate::domain::change::SigningKeyInfo;
use crate::domain::error::Violations;
use crate::domain::playback::{
    Grant, Restrictions, Scope, SigningAlgorithm, VerifyFailure, validity_window,
};
use crate::domain::user::parse_id;
use crate::proto::{self, playback_token_service_server::PlaybackTokenService};

pub struct PlaybackApi {
    pub tokens: Arc<PlaybackTokens>,
    pub settings: PlaybackSettings,
}

impl PlaybackApi {
    /// The request as a grant, or every field violation at once.
    fn grant(&self, request: proto::IssuePlaybackTokenRequest) -> Result<Grant, DomainError> {
        let mut v = Violations::default();
        let scope = v.check(scope(request.scope));
        let restrictions = request.restrictions.unwrap_or_default();
        let restrictions = v.check(Restrictions::parse(
            &restrictions.domain,
            &restrictions.ip,
            &restrictions.tag,
            &restrictions.user,
        ));
        let nbf = v
            .check(convert::optional_time("nbf", request.nbf))
            .flatten();
        let exp = v
            .check(convert::optional_time("exp", request.exp))
            .flatten();
        let window = v.check(validity_window(
            Utc::now(),
            nbf,
            exp,
            request.revocable,
            self.settings.default_ttl,
        ));
        let (scope, restrictions, window) =
            v.conclude(|| Some((scope?, restrictions?, window?)))?;
        Ok(Grant {
            scope,
            window,
            revocable: request.revocable,
            restrictions,
            force_disconnect: request.force_disconnect,
        })
    }
}

/// Exactly one scope. (Protobuf keeps only the last member of a oneof sent
/// twice, so "several" arrives as one.)
fn scope(scope: Option<proto::PlaybackScope>) -> Result<Scope, DomainError> {
    use proto::playback_scope::Scope as Pb;
    match scope.and_then(|s| s.scope) {
        Some(Pb::Streams(list)) => Scope::streams("scope.streams.names", list.names),
        Some(Pb::GroupId(group)) => Scope::group("scope.group_id", group),
        Some(Pb::OrganisationWide(true)) => Ok(Scope::Organisation),
        Some(Pb::OrganisationWide(false)) | None => Err(DomainError::invalid(
            "scope",
            "must be exactly one of streams, group_id or organisation_wide (true)",
        )),
    }
}

#[tonic::async_trait]
impl PlaybackTokenService for PlaybackApi {
    async fn issue_playback_token(
        &self,
        request: Request<proto::IssuePlaybackTokenRequest>,
    ) -> Result<Response<proto::IssuePlaybackTokenResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let grant = self.grant(request.into_inner())?;
        let issued = self.tokens.issue(&caller, request_id, grant).await?;
        Ok(Response::new(proto::IssuePlaybackTokenResponse {
            token: issued.token,
            token_id: issued.token_id.to_string(),
            expires_at: Some(convert::timestamp(issued.expires_at)),
            kid: issued.kid,
        }))
    }

    async fn verify_playback_token(
        &self,
        request: Request<proto::VerifyPlaybackTokenRequest>,
    ) -> Result<Response<proto::VerifyPlaybackTokenResponse>, Status> {
        let request = request.into_inner();
        // Names longer than any scope may hold match nothing; refuse them
        // rather than compare them. (An overlong token is answered MALFORMED.)
        let mut v = Violations::default();
        for (field, value) in [("stream", &request.stream), ("group_id", &request.group_id)] {
            if value.chars().count() > crate::domain::playback::MAX_NAME_LEN {
                v.add(field, "must be at most 128 characters");
            }
        }
        v.into_result()?;
        let verdict = self
            .tokens
            .verify(&request.token, &request.stream, &request.group_id)
            .await?;
        Ok(Response::new(proto::VerifyPlaybackTokenResponse {
            valid: verdict.failure.is_none(),
            reason: verdict
                .failure
                .map_or(proto::VerifyFailureReason::Unspecified, failure_to_proto)
                as i32,
            claims: verdict
                .claims
                .map(|(claims, kid)| claims_to_proto(&claims, kid)),
        }))
    }

    async fn revoke_playback_token(
        &self,
        request: Request<proto::RevokePlaybackTokenRequest>,
    ) -> Result<Response<proto::RevokePlaybackTokenResponse>, Status> {
        use proto::revoke_playback_token_request::Target;
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let target = match request.into_inner().target {
            Some(Target::Token(token)) if !token.is_empty() => RevokeTarget::Token(token),
            Some(Target::TokenId(id)) => RevokeTarget::TokenId(parse_id("token_id", &id)?),
            _ => {
                return Err(
                    DomainError::invalid("target", "give the token or its token_id").into(),
                );
            }
        };
        let (token_id, revoked_at) = self.tokens.revoke(&caller, request_id, target).await?;
        Ok(Response::new(proto::RevokePlaybackTokenResponse {
            token_id: token_id.to_string(),
            revoked_at: Some(convert::timestamp(revoked_at)),
        }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<proto::ListSigningKeysRequest>,
    ) -> Result<Response<proto::ListSigningKeysResponse>, Status> {
        let keys = self.tokens.published_keys().await?;
        let keys = keys
            .into_iter()
            .map(|key| signing_key_to_proto(&key.into()))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(proto::ListSigningKeysResponse { keys }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<proto::RotateSigningKeyRequest>,
    ) -> Result<Response<proto::RotateSigningKeyResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let algorithm = algorithm("algorithm", request.algorithm)?;
        let (key, retired_kid) = self
            .tokens
            .rotate(&caller, request_id, algorithm, request.revoke_previous)
            .await?;
        Ok(Response::new(proto::RotateSigningKeyResponse {
            key: Some(signing_key_to_proto(&key.into())?),
            retired_kid: retired_kid.unwrap_or_default(),
        }))
    }
}

fn algorithm(field: &str, value: i32) -> Result<Option<SigningAlgorithm>, DomainError> {
    match proto::SigningAlgorithm::try_from(value) {
        Ok(proto::SigningAlgorithm::Unspecified) => Ok(None),
        Ok(proto::SigningAlgorithm::Eddsa) => Ok(Some(SigningAlgorithm::EdDsa)),
        Ok(proto::SigningAlgorithm::Rs256) => Ok(Some(SigningAlgorithm::Rs256)),
        Err(_) => Err(DomainError::invalid(field, "is not a known algorithm")),
    }
}

fn failure_to_proto(failure: VerifyFailure) -> proto::VerifyFailureReason {
    use proto::VerifyFailureReason as R;
    match failure {
        VerifyFailure::Expired => R::Expired,
        VerifyFailure::NotYetValid => R::NotYetValid,
        VerifyFailure::Revoked => R::Revoked,
        VerifyFailure::WrongStream => R::WrongStream,
        VerifyFailure::BadSignature => R::BadSignature,
        VerifyFailure::UnknownKid => R::UnknownKid,
        VerifyFailure::Malformed => R::Malformed,
        VerifyFailure::KeyRevoked => R::KeyRevoked,
    }
}

fn scope_to_proto(scope: &Scope) -> proto::PlaybackScope {
    use proto::playback_scope::Scope as Pb;
    let scope = match scope {
        Scope::Streams(names) => Pb::Streams(proto::StreamList {
            names: names.clone(),
        }),
        Scope::Group(group) => Pb::GroupId(group.clone()),
        Scope::Organisation => Pb::OrganisationWide(true),
    };
    proto::PlaybackScope { scope: Some(scope) }
}

fn seconds(value: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: value,
        nanos: 0,
    })
}

fn claims_to_proto(claims: &PlaybackClaims, kid: String) -> proto::PlaybackTokenClaims {
    let restrictions = claims.restrictions();
    proto::PlaybackTokenClaims {
        organisation_id: claims.org.to_string(),
        scope: Some(scope_to_proto(&claims.scope())),
        restrictions: Some(proto::PlaybackRestrictions {
            domain: restrictions.domain.unwrap_or_default(),
            ip: restrictions.ip.unwrap_or_default(),
            tag: restrictions.tag.unwrap_or_default(),
            user: restrictions.user.unwrap_or_default(),
        }),
        issued_at: seconds(claims.iat),
        not_before: seconds(claims.nbf),
        expires_at: seconds(claims.exp),
        token_id: claims.jti.to_string(),
        issued_by: claims.sub.clone(),
        revocable: claims.revocable,
        force_disconnect: claims.force_disconnect,
        kid,
    }
}

pub(super) fn signing_key_to_proto(key: &SigningKeyInfo) -> Result<proto::SigningKey, DomainError> {
    let alg: SigningAlgorithm = key.alg.parse()?;
    let JwkParts { kty, crv, x, n, e } = jwk_parts(alg, &key.public_key)?;
    Ok(proto::SigningKey {
        kid: key.kid.clone(),
        kty: kty.to_owned(),
        alg: alg.as_str().to_owned(),
        r#use: "sig".to_owned(),
        crv,
        x,
        n,
        e,
        organisation_id: key.organisation_id.to_string(),
        created_at: Some(convert::timestamp(key.created_at)),
        retired_at: key.retired_at.map(convert::timestamp),
        verify_until: key.verify_until.map(convert::timestamp),
    })
}
