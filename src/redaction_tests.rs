//! `Debug` of every type that holds a secret redacts it: configuration,
//! credentials, issued tokens, keys and the rows that carry password hashes.

use clap::Parser as _;
use uuid::Uuid;

use crate::auth::Credential;
use crate::auth::opaque;
use crate::auth::playback::generate_key;
use crate::auth::tokens::{AccessTokens, TokenClaims, TokenSettings};
use crate::config::{Cli, Command};
use crate::domain::playback::SigningAlgorithm;
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
