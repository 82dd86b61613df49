//! `Debug` of every type that holds a secret redacts it: configuration,
//! credentials, issued tokens, keys and the rows that carry password hashes.

use clap::Parser as _;
use uuid::Uuid;

use crate::auth::Credential;
use crate::auth::opaque;
use crate::auth::playback::generate_key;
use crate::auth::tokens::{AccessTokens, TokenClaims, TokenSettings};
use crate::config::{Cli, Command};
use crate::domain::Role;
use crate::domain::actor::Actor;
use crate::domain::api_token::ApiToken;
use crate::domain::change::{
    PlaybackTokenInfo, ServiceInfo, SigningKeyInfo, TargetState, TargetType, UserInfo,
};
use crate::domain::invite::Invite;
use crate::domain::permission::PermissionSet;
use crate::domain::playback::SigningAlgorithm;
use crate::domain::session::Session;
use crate::domain::user::{Organisation, User, UserState};
use crate::store::models::{LoginRow, NewUserRow};

const SECRET: &str = "s3cr3t-value-that-must-not-show-0123456789";

#[track_caller]
fn hides(debug: String, secret: &str) {
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[test]
fn configuration_hides_the_jwt_secret_and_the_bootstrap_password() {
    let serve = Cli::try_parse_from(["usermgmt", "serve", "--jwt-secret", SECRET]).expect("serve");
    hides(format!("{serve:?}"), SECRET);
    let Command::Serve(args) = serve.command else {
        panic!("serve");
    };
    hides(format!("{args:?}"), SECRET);
    let bootstrap = Cli::try_parse_from([
        "usermgmt",
        "bootstrap",
        "--organisation",
        "Acme",
        "--email",
        "a@example.com",
        "--password",
        SECRET,
    ])
    .expect("bootstrap");
    hides(format!("{bootstrap:?}"), SECRET);
}

#[test]
fn credentials_tokens_and_keys_hide_their_secrets() {
    hides(format!("{:?}", Credential::AccessToken(SECRET)), SECRET);
    hides(format!("{:?}", Credential::ApiKey(SECRET)), SECRET);

    let tokens = AccessTokens::new(
        SECRET.as_bytes(),
        TokenSettings {
            issuer: "usermgmt".into(),
            audience: "usermgmt".into(),
            lifetime: std::time::Duration::from_secs(60),
        },
        1 << 20,
    )
    .expect("tokens");
    hides(format!("{tokens:?}"), SECRET);
    let issued = tokens
        .issue(TokenClaims {
            user_id: Uuid::now_v7(),
            organisation_id: Uuid::now_v7(),
            token_key: Uuid::new_v4(),
            session_id: Uuid::now_v7(),
        })
        .expect("issue");
    hides(format!("{issued:?}"), &issued.token);

    let opaque = opaque::generate(opaque::API_KEY_PREFIX).expect("generate");
    let debug = format!("{opaque:?}");
    assert!(!debug.contains(&opaque.token), "{debug}");

    let key = generate_key(SigningAlgorithm::EdDsa).expect("key");
    hides(
        format!("{key:?}"),
        &format!("{:?}", &key.private_der[..8]).replace(['[', ']'], ""),
    );
}

#[test]
fn rows_with_password_hashes_hide_them() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let new_user = NewUserRow {
        id: Uuid::now_v7(),
        organisation_id: Uuid::now_v7(),
        email: "a@example.com",
        role: "nanoUser",
        token_key: Uuid::new_v4(),
        password_hash: hash,
    };
    hides(format!("{new_user:?}"), hash);
    let login = LoginRow {
        id: Uuid::now_v7(),
        organisation_id: Uuid::now_v7(),
        token_key: Uuid::new_v4(),
        password_hash: hash.into(),
        state: "active".into(),
    };
    hides(format!("{login:?}"), hash);
}

/// The names a stored state of the change feed must never carry: secrets,
/// hashes, keys' private halves, tokenKeys.
const SECRET_FIELDS: &[&str] = &[
    "token_key",
    "token_hash",
    "password",
    "password_hash",
    "secret",
    "secret_hash",
    "key_hash",
    "api_key_hash",
    "private_key",
    "refresh_token",
];

/// One state of each type of target, with a known tokenKey where the domain
/// value has one.
fn sample_state(target_type: TargetType, token_key: Uuid) -> TargetState {
    let now = chrono::Utc::now();
    let user = User {
        id: Uuid::now_v7(),
        organisation_id: Uuid::now_v7(),
        email: "a@example.com".into(),
        role: Role::NanoUser,
        token_key,
        version: 3,
        created_at: now,
        updated_at: now,
        last_login_at: Some(now),
        state: UserState::Active,
    };
    match target_type {
        TargetType::User => TargetState::User(UserInfo::from(&user)),
        TargetType::Invite => TargetState::Invite(Invite {
            id: Uuid::now_v7(),
            organisation_id: user.organisation_id,
            email: "b@example.com".into(),
            role: Role::NanoUser,
            created_by: Actor::User(user.id),
            created_at: now,
            expires_at: now,
        }),
        TargetType::Session => TargetState::Session(Session {
            id: Uuid::now_v7(),
            organisation_id: user.organisation_id,
            user_id: user.id,
            token_key,
            created_at: now,
            last_refreshed_at: None,
            expires_at: now,
            absolute_expires_at: now,
            ended_at: None,
            client_address: "192.0.2.1".into(),
            user_agent: "test".into(),
        }),
        TargetType::ApiToken => TargetState::ApiToken(ApiToken {
            id: Uuid::now_v7(),
            organisation_id: user.organisation_id,
            user_id: user.id,
            name: "ci".into(),
            permissions: PermissionSet::of_role(Role::NanoUser),
            created_at: now,
            expires_at: now,
            last_used_at: None,
        }),
        TargetType::PlaybackToken => TargetState::PlaybackToken(PlaybackTokenInfo {
            token_id: Uuid::new_v4(),
            scope: "organisation-wide".into(),
            revocable: true,
            expires_at: now,
            revoked_at: None,
            kid: "k1".into(),
        }),
        TargetType::PlaybackKey => TargetState::PlaybackKey(SigningKeyInfo {
            kid: "k1".into(),
            organisation_id: user.organisation_id,
            alg: "EdDSA".into(),
            public_key: vec![1, 2, 3],
            created_at: now,
            retired_at: None,
            verify_until: None,
            revoked_at: None,
        }),
        TargetType::Organisation => TargetState::Organisation(Organisation {
            id: user.organisation_id,
            name: "Acme".into(),
            created_at: now,
            role_counts: vec![(Role::NanoAdmin, 1)],
            secure_playback: true,
            api_key_fingerprint: Some("SHA256:abc".into()),
            api_key_rotated_at: Some(now),
            version: 1,
            max_non_revocable_lifetime: std::time::Duration::from_secs(60),
        }),
        TargetType::Service => TargetState::Service(ServiceInfo {
            id: Uuid::now_v7(),
            name: "edge".into(),
            created_at: now,
        }),
    }
}

/// Every object key in `value`, recursively.
fn keys_of(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                into.push(key.clone());
                keys_of(inner, into);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| keys_of(item, into)),
        _ => {}
    }
}

#[test]
fn the_change_feeds_stored_states_hold_no_secret() {
    for target_type in TargetType::ALL {
        let token_key = Uuid::new_v4();
        let state = sample_state(target_type, token_key);
        let json = serde_json::to_value(&state).expect("serialise");
        let text = json.to_string();
        let mut keys = Vec::new();
        keys_of(&json, &mut keys);
        for key in &keys {
            assert!(
                !SECRET_FIELDS.contains(&key.as_str()),
                "{target_type:?}'s stored state has the field {key}: {text}"
            );
        }
        for form in [token_key.to_string(), token_key.simple().to_string()] {
            assert!(
                !text.contains(&form),
                "{target_type:?}'s stored state holds the tokenKey: {text}"
            );
        }
        // What is stored reads back as the same kind of state.
        let back: TargetState = serde_json::from_value(json).expect("read back");
        assert_eq!(
            std::mem::discriminant(&back),
            std::mem::discriminant(&state)
        );
    }
}
