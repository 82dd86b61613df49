//! Authorize: the per-call check, offered to the cloud's other services.

use tonic::Code;
use usermgmt::proto::{
    self, DenialReason, Role, auth_service_client::AuthServiceClient, credential::Kind,
    role_service_client::RoleServiceClient,
};

use crate::support::*;

fn ask(kind: Kind, permission: &str, organisation_id: &str) -> proto::AuthorizeRequest {
    proto::AuthorizeRequest {
        credential: Some(proto::Credential { kind: Some(kind) }),
        permission: permission.into(),
        organisation_id: organisation_id.into(),
    }
}

fn as_service<T>(message: T, service_key: &str) -> tonic::Request<T> {
    with_header(message, "x-usermgmt-service-key", service_key)
}

/// The product's RBAC table (the product documentation's capabilities, and
/// docs/api.md's permission matrix for the service's own additions), written
/// out here rather than asked of the code under test: each permission with
/// whether nanoAdmin, nanoUser and nanoReadOnly hold it.
const PRODUCT_MATRIX: [(&str, [bool; 3]); 31] = [
    ("apikey.read", [true, false, false]),
    ("apikey.rotate", [true, false, false]),
    ("playerkey.read", [true, true, true]),
    ("token.read_own", [true, true, true]),
    ("webhook.set", [true, false, false]),
    ("users.read", [true, true, false]),
    ("users.create", [true, false, false]),
    ("users.invite", [true, false, false]),
    ("users.update_role", [true, false, false]),
    ("users.renew_token", [true, false, false]),
    ("users.delete", [true, false, false]),
    ("audit.read", [true, false, false]),
    ("organisation.update", [true, false, false]),
    ("streams.read", [true, true, true]),
    ("streams.create", [true, true, false]),
    ("streams.stop", [true, false, false]),
    ("streams.lock", [true, false, false]),
    ("streams.delete", [true, false, false]),
    ("tags.read", [true, true, true]),
    ("tags.write", [true, true, false]),
    ("tags.delete", [true, false, false]),
    ("playback_tokens.create", [true, true, false]),
    ("playback_tokens.revoke", [true, true, false]),
    ("playback_keys.rotate", [true, false, false]),
    ("metrics.read", [true, true, true]),
    ("sessions.manage", [true, false, false]),
    ("users.suspend", [true, false, false]),
    ("api_tokens.manage", [true, false, false]),
    ("sessions.manage_own", [true, true, true]),
    ("api_tokens.manage_own", [true, true, true]),
    ("users.renew_own_token", [true, true, true]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_permissions_and_the_api_key_all() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let service_key = register_service(&server.db, "streams").await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    admin
        .create_user("op@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    admin
        .create_user("ro@acme.example.com", Role::NanoReadOnly)
        .await
        .expect("create");
    // In the order of the matrix's columns.
    let tokens = [
        ("nanoAdmin", admin.token.clone()),
        (
            "nanoUser",
            login(&channel, "op@acme.example.com", PASSWORD).await,
        ),
        (
            "nanoReadOnly",
            login(&channel, "ro@acme.example.com", PASSWORD).await,
        ),
    ];
    // The matrix the service serves is the table, column by column.
    let served = RoleServiceClient::new(channel.clone())
        .list_roles(authed(proto::ListRolesRequest {}, &admin.token))
        .await
        .expect("list roles")
        .into_inner();
    let ids: Vec<&str> = served.permissions.iter().map(|p| p.id.as_str()).collect();
    let table: Vec<&str> = PRODUCT_MATRIX.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, table, "the permissions served");
    for (column, (role, _)) in tokens.iter().enumerate() {
        let definition = served
            .roles
            .iter()
            .find(|r| r.display_name == *role)
            .expect("the role is served");
        let holds: Vec<&str> = PRODUCT_MATRIX
            .iter()
            .filter(|(_, holders)| holders[column])
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(definition.permissions, holds, "{role}");
    }
    let mut auth = AuthServiceClient::new(channel);

    for (column, (role, token)) in tokens.iter().enumerate() {
        for (permission, holders) in PRODUCT_MATRIX {
            let request = ask(
                Kind::AccessToken(token.clone()),
                permission,
                &org.id.to_string(),
            );
            let answer = auth
                .authorize(as_service(request, &service_key))
                .await
                .expect("authorize")
                .into_inner();
            assert_eq!(answer.allowed, holders[column], "{role} {permission}");
            let principal = answer.principal.expect("a valid token has a principal");
            assert_eq!(principal.organisation_id, org.id.to_string());
            if !answer.allowed {
                assert_eq!(answer.denial_reason, DenialReason::PermissionMissing as i32);
                assert_eq!(answer.reason, "PERMISSION_MISSING");
            }
        }
    }
    for (permission, _) in PRODUCT_MATRIX {
        let request = ask(Kind::ApiKey(org.api_key.clone()), permission, "");
        let answer = auth
            .authorize(as_service(request, &service_key))
            .await
            .expect("authorize")
            .into_inner();
        assert!(answer.allowed, "the API key may {permission}");
        assert!(
            answer
                .principal
                .expect("principal")
                .actor
                .starts_with("api_key:")
        );
    }

    // The batch gives the same answers, in order.
    let batch = proto::AuthorizeBatchRequest {
        credential: Some(proto::Credential {
            kind: Some(Kind::AccessToken(tokens[2].1.clone())),
        }),
        permissions: PRODUCT_MATRIX
            .iter()
            .map(|(id, _)| (*id).to_owned())
            .collect(),
        organisation_id: String::new(),
    };
    let decisions = auth
        .authorize_batch(as_service(batch, &service_key))
        .await
        .expect("batch")
        .into_inner()
        .decisions;
    let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
    let expected: Vec<bool> = PRODUCT_MATRIX
        .iter()
        .map(|(_, holders)| holders[2])
        .collect();
    assert_eq!(allowed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_say_why() {
    // Deletes a user behind the service's back: uncached, as above.
    let server = TestServer::start_with(&["--auth-cache", "false"]).await;
    let acme = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    let service_key = register_service(&server.db, "tags").await;
    let channel = server.channel().await;
    let token = login(&channel, &acme.admin_email, ADMIN_PASSWORD).await;
    let mut auth = AuthServiceClient::new(channel);
    let mut decide = async |request| {
        auth.authorize(as_service(request, &service_key))
            .await
            .expect("answer")
            .into_inner()
    };

    let wrong_org = decide(ask(
        Kind::AccessToken(token.clone()),
        "tags.read",
        &globex.id.to_string(),
    ))
    .await;
    assert!(!wrong_org.allowed);
    assert_eq!(
        wrong_org.denial_reason,
        DenialReason::WrongOrganisation as i32
    );
    let garbage = decide(ask(Kind::AccessToken("garbage".into()), "tags.read", "")).await;
    assert_eq!(
        garbage.denial_reason,
        DenialReason::CredentialInvalid as i32
    );
    assert!(garbage.principal.is_none());
    let foreign_key = decide(ask(
        Kind::ApiKey(globex.api_key.clone()),
        "tags.read",
        &acme.id.to_string(),
    ))
    .await;
    assert_eq!(
        foreign_key.denial_reason,
        DenialReason::WrongOrganisation as i32
    );

    server
        .db
        .client()
        .await
        .execute("DELETE FROM users WHERE id = $1", &[&acme.admin_id])
        .await
        .expect("delete");
    let deleted = decide(ask(Kind::AccessToken(token), "tags.read", "")).await;
    assert_eq!(
        deleted.denial_reason,
        DenialReason::CredentialRevoked as i32
    );
    assert_eq!(deleted.reason, "TOKEN_REVOKED");

    let unknown = auth
        .authorize(as_service(
            ask(Kind::ApiKey(acme.api_key.clone()), "streams.fly", ""),
            &service_key,
        ))
        .await;
    assert_eq!(
        violated_fields(&assert_status(unknown, Code::InvalidArgument, None)),
        ["permission"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_registered_services_may_ask() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let service_key = register_service(&server.db, "metrics").await;
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut auth = AuthServiceClient::new(channel);
    let request = || ask(Kind::AccessToken(token.clone()), "metrics.read", "");

    let anonymous = auth.authorize(request()).await;
    assert_status(
        anonymous,
        Code::Unauthenticated,
        Some("SERVICE_CREDENTIALS_MISSING"),
    );
    let as_user = auth.authorize(authed(request(), &token)).await;
    assert_status(
        as_user,
        Code::Unauthenticated,
        Some("SERVICE_CREDENTIALS_MISSING"),
    );
    let wrong = auth
        .authorize(as_service(request(), &format!("usk_{}", "B".repeat(43))))
        .await;
    assert_status(
        wrong,
        Code::Unauthenticated,
        Some("SERVICE_CREDENTIALS_INVALID"),
    );
    auth.authorize(as_service(request(), &service_key))
        .await
        .expect("a registered service");

    store(&server.db)
        .revoke_service("metrics")
        .await
        .expect("revoke");
    let revoked = auth.authorize(as_service(request(), &service_key)).await;
    assert_status(
        revoked,
        Code::Unauthenticated,
        Some("SERVICE_CREDENTIALS_INVALID"),
    );
}

/// Revocation through one replica, Authorize on another: denied on the very
/// next call, for every kind of revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_deny_on_the_next_call_on_another_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        db,
        org,
        on_first: on_writer,
        on_second: on_reader,
        ..
    } = &replicas;
    let service_key = register_service(db, "streams").await;
    let mut auth = AuthServiceClient::new(on_reader.clone());
    let admin = Session::login(on_writer, &org.admin_email, ADMIN_PASSWORD).await;
    let mut check = async |kind: Kind| {
        auth.authorize(as_service(ask(kind, "streams.delete", ""), &service_key))
            .await
            .expect("answer")
            .into_inner()
    };

    // A role change.
    let bob = admin
        .create_user("bob@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create");
    let bob_token = login(on_writer, "bob@acme.example.com", PASSWORD).await;
    assert!(check(Kind::AccessToken(bob_token.clone())).await.allowed);
    admin
        .set_role(&bob.id, Role::NanoAdmin, "")
        .await
        .expect("same role is no change");
    assert!(check(Kind::AccessToken(bob_token.clone())).await.allowed);
    admin
        .set_role(&bob.id, Role::NanoUser, "")
        .await
        .expect("demote");
    assert!(!check(Kind::AccessToken(bob_token)).await.allowed);

    // A tokenKey renewal.
    let bob_token = login(on_writer, "bob@acme.example.com", PASSWORD).await;
    let renew = admin.ask_renew(&bob.id).await.expect("ask");
    admin
        .confirm_renew(&bob.id, &renew.confirmation_token)
        .await
        .expect("renew");
    let answer = check(Kind::AccessToken(bob_token)).await;
    assert_eq!(answer.denial_reason, DenialReason::CredentialRevoked as i32);

    // A deletion.
    let bob_token = login(on_writer, "bob@acme.example.com", PASSWORD).await;
    let delete = admin.ask_delete(&bob.id).await.expect("ask");
    admin
        .confirm_delete(&bob.id, &delete.confirmation_token)
        .await
        .expect("delete");
    assert_eq!(
        check(Kind::AccessToken(bob_token)).await.denial_reason,
        DenialReason::CredentialRevoked as i32
    );

    // An API key rotation.
    assert!(check(Kind::ApiKey(org.api_key.clone())).await.allowed);
    let confirmation = admin.ask(&TwoStep::RotateApiKey).await.expect("ask");
    admin
        .confirm(&TwoStep::RotateApiKey, &confirmation.confirmation_token)
        .await
        .expect("rotate");
    assert_eq!(
        check(Kind::ApiKey(org.api_key.clone())).await.denial_reason,
        DenialReason::CredentialInvalid as i32
    );
}
