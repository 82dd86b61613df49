//! The organisation API key: admin rights in its organisation, shown once,
//! stored as a hash, rotated in two steps.

use std::process::Command;

use tonic::Code;
use usermgmt::proto::{
    self, Role, auth_service_client::AuthServiceClient,
    organisation_service_client::OrganisationServiceClient,
};

use crate::support::*;

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    with_header(message, "x-bintu-apikey", key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_prints_the_api_key_once_and_stores_only_its_hash() {
    let db = TestDb::new().await;
    let output = Command::new(env!("CARGO_BIN_EXE_usermgmt"))
        .args([
            "bootstrap",
            "--organisation",
            "Acme",
            "--email",
            "root@acme.example.com",
        ])
        .env("DATABASE_URL", &db.url)
        .env("USERMGMT_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)
        .env("USERMGMT_LOG", "debug")
        .output()
        .expect("run bootstrap");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    let key = printed["api_key"].as_str().expect("api_key").to_owned();
    assert!(key.starts_with("um_live_") && key.len() > 40);
    assert!(printed["organisation_id"].is_string() && printed["user_id"].is_string());
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(&key),
        "the key is not logged"
    );

    // No column of any table holds the key (or the admin's password).
    let client = db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    for table in tables {
        let dump: Vec<String> = client
            .query(
                &format!("SELECT row_to_json(t)::text FROM \"{table}\" t"),
                &[],
            )
            .await
            .expect("dump")
            .iter()
            .map(|row| row.get(0))
            .collect();
        for row in dump {
            assert!(!row.contains(&key), "{table} holds the API key");
            assert!(!row.contains(ADMIN_PASSWORD), "{table} holds the password");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_acts_as_a_nano_admin_of_its_organisation() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let me = auth
        .who_am_i(with_key(proto::WhoAmIRequest {}, &org.api_key))
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.role, Role::NanoAdmin as i32);
    assert!(me.user.is_none());
    assert_eq!(
        me.organisation.expect("organisation").id,
        org.id.to_string()
    );

    let mut users = usermgmt::proto::user_service_client::UserServiceClient::new(channel.clone());
    let bob = users
        .create_user(with_key(
            proto::CreateUserRequest {
                email: "bob@acme.example.com".into(),
                role: Role::NanoUser as i32,
                password: PASSWORD.into(),
            },
            &org.api_key,
        ))
        .await
        .expect("create with the API key")
        .into_inner()
        .user
        .expect("user");
    let bob_session = Session::login(&channel, "bob@acme.example.com", PASSWORD).await;

    // The API key renews users' tokenKeys (both steps).
    let key = Caller::ApiKey(org.api_key.clone());
    let renew = TwoStep::RenewTokenKey(bob.id.clone());
    let confirmation = two_step::ask(&channel, &key, &renew).await.expect("ask");
    two_step::confirm(&channel, &key, &renew, &confirmation.confirmation_token)
        .await
        .expect("renew");
    assert_status(
        bob_session.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );

    // The audit log names the key by its fingerprint.
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let events: Vec<_> = admin
        .audit_events(proto::ListAuditEventsRequest::default())
        .await
        .expect("audit")
        .into_iter()
        .filter(is_call_event)
        .collect();
    let organisation = OrganisationServiceClient::new(channel)
        .get_organisation(admin.req(proto::GetOrganisationRequest {}))
        .await
        .expect("organisation")
        .into_inner()
        .organisation
        .expect("organisation");
    let actor = format!("api_key:{}", organisation.api_key_fingerprint);
    // user.create with the organisation.members of the role counts,
    // user.renew_token_key with the session.end of Bob's session.
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|e| e.actor == actor), "{events:?}");
    assert!(organisation.api_key_rotated_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_foreign_malformed_and_doubled_credentials_are_refused() {
    let server = TestServer::start().await;
    let acme = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    let channel = server.channel().await;
    let token = login(&channel, &acme.admin_email, ADMIN_PASSWORD).await;
    let mut users = usermgmt::proto::user_service_client::UserServiceClient::new(channel);
    let list = proto::ListUsersRequest::default;

    let unknown = format!("um_live_{}", "A".repeat(43));
    assert_status(
        users.list_users(with_key(list(), &unknown)).await,
        Code::Unauthenticated,
        Some("API_KEY_INVALID"),
    );
    assert_status(
        users.list_users(with_key(list(), "not-a-key")).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MALFORMED"),
    );
    let mut both = with_key(list(), &acme.api_key);
    both.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("value"),
    );
    assert_status(
        users.list_users(both).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_AMBIGUOUS"),
    );

    // Globex's key sees Globex only.
    let listed = users
        .list_users(with_key(list(), &globex.api_key))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, 1);
    assert_eq!(listed.users[0].id, globex.admin_id.to_string());
    let get = proto::GetUserRequest {
        user_id: acme.admin_id.to_string(),
    };
    assert_status(
        users.get_user(with_key(get, &globex.api_key)).await,
        Code::NotFound,
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_api_key_takes_two_steps_and_kills_the_old_key_on_every_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    let mut organisations = OrganisationServiceClient::new(on_first.clone());
    let mut auth_second = AuthServiceClient::new(on_second.clone());
    auth_second
        .who_am_i(with_key(proto::WhoAmIRequest {}, &org.api_key))
        .await
        .expect("the key works on the second replica");

    let key = Caller::ApiKey(org.api_key.clone());
    let confirmation = two_step::ask(on_first, &key, &TwoStep::RotateApiKey)
        .await
        .expect("first step");
    assert!(confirmation.warning.contains("stop working"));
    auth_second
        .who_am_i(with_key(proto::WhoAmIRequest {}, &org.api_key))
        .await
        .expect("nothing changed yet");

    // A nanoUser may not rotate; another admin may not use this confirmation.
    let admin = Session::login(on_first, &org.admin_email, ADMIN_PASSWORD).await;
    let foreign = organisations
        .rotate_api_key(admin.req(proto::RotateApiKeyRequest {
            confirmation_token: confirmation.confirmation_token.clone(),
        }))
        .await;
    assert_status(
        foreign,
        Code::FailedPrecondition,
        Some("CONFIRMATION_MISMATCH"),
    );

    let rotated = two_step::confirm(
        on_first,
        &key,
        &TwoStep::RotateApiKey,
        &confirmation.confirmation_token,
    )
    .await
    .expect("second step")
    .rotated();
    assert_ne!(rotated.api_key, org.api_key);
    let old = auth_second
        .who_am_i(with_key(proto::WhoAmIRequest {}, &org.api_key))
        .await;
    assert_status(old, Code::Unauthenticated, Some("API_KEY_INVALID"));
    auth_second
        .who_am_i(with_key(proto::WhoAmIRequest {}, &rotated.api_key))
        .await
        .expect("the new key works everywhere");
    let _ = Role::NanoUser;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_organisation_follows_its_field_mask_and_is_audited() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut organisations = OrganisationServiceClient::new(channel.clone());
    let update =
        |name: &str, secure: bool, paths: &[&str], etag: &str| proto::UpdateOrganisationRequest {
            organisation: Some(proto::Organisation {
                name: name.into(),
                secure_playback: secure,
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        };

    let secured = organisations
        .update_organisation(admin.req(update("ignored", true, &["secure_playback"], "")))
        .await
        .expect("update")
        .into_inner()
        .organisation
        .expect("organisation");
    assert!(secured.secure_playback);
    assert_eq!(secured.name, "Acme", "the mask leaves the name alone");
    let renamed = organisations
        .update_organisation(admin.req(update("Acme Streaming", false, &["name"], &secured.etag)))
        .await
        .expect("rename")
        .into_inner()
        .organisation
        .expect("organisation");
    assert_eq!(
        (renamed.name.as_str(), renamed.secure_playback),
        ("Acme Streaming", true)
    );
    let stale = organisations
        .update_organisation(admin.req(update("Again", false, &["name"], &secured.etag)))
        .await;
    assert_status(stale, Code::Aborted, None);
    let bad = organisations
        .update_organisation(admin.req(update("x", false, &["id"], "")))
        .await;
    assert_eq!(
        violated_fields(&assert_status(bad, Code::InvalidArgument, None)),
        ["update_mask"]
    );
    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "organisation.update".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 2);

    let operator = admin
        .create_user("op@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let operator = Session::login(&channel, &operator.email, PASSWORD).await;
    let denied = organisations
        .update_organisation(operator.req(update("x", false, &["name"], "")))
        .await;
    assert_status(denied, Code::PermissionDenied, Some("PERMISSION_MISSING"));
    let rotate = organisations
        .rotate_api_key(operator.req(proto::RotateApiKeyRequest::default()))
        .await;
    assert_status(rotate, Code::PermissionDenied, Some("PERMISSION_MISSING"));
}
