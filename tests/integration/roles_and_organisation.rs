use usermgmt::proto::{
    self, organisation_service_client::OrganisationServiceClient,
    role_service_client::RoleServiceClient,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_roles_serves_the_matrix() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let viewer = "viewer@acme.example.com";
    add_user(&channel, &org, viewer, proto::Role::NanoReadOnly).await;
    let viewer = login(&channel, "viewer@acme.example.com", PASSWORD).await;

    let response = RoleServiceClient::new(channel)
        .list_roles(authed(proto::ListRolesRequest {}, &viewer))
        .await
        .expect("any role may list roles")
        .into_inner();
    let names: Vec<_> = response
        .roles
        .iter()
        .map(|r| r.display_name.as_str())
        .collect();
    assert_eq!(names, ["nanoAdmin", "nanoUser", "nanoReadOnly"]);
    let read_only = &response.roles[2];
    assert_eq!(
        read_only.permissions,
        [
            "playerkey.read",
            "token.read_own",
            "streams.read",
            "tags.read",
            "metrics.read",
            "sessions.manage_own",
            "api_tokens.manage_own",
            "users.renew_own_token"
        ]
    );
    assert!(
        response.roles[1]
            .permissions
            .contains(&"playback_tokens.create".to_owned())
    );
    assert!(
        !response.roles[1]
            .permissions
            .contains(&"streams.delete".to_owned())
    );
    assert_eq!(
        response.permissions.len(),
        response.roles[0].permissions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_organisation_counts_users_per_role() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    add_user(&channel, &org, "a@acme.example.com", proto::Role::NanoUser).await;
    add_user(&channel, &org, "b@acme.example.com", proto::Role::NanoUser).await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    let organisation = OrganisationServiceClient::new(channel)
        .get_organisation(authed(proto::GetOrganisationRequest {}, &token))
        .await
        .expect("organisation")
        .into_inner()
        .organisation
        .expect("organisation");
    assert_eq!(organisation.name, "Acme");
    assert_eq!(organisation.user_count, 3);
    let counts: Vec<_> = organisation
        .role_counts
        .iter()
        .map(|c| (c.role, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            (proto::Role::NanoAdmin as i32, 1),
            (proto::Role::NanoUser as i32, 2),
            (proto::Role::NanoReadOnly as i32, 0)
        ]
    );
}

/// WhoAmI shows a caller only what its role may read elsewhere: a
/// nanoReadOnly (which GetOrganisation refuses) learns which organisation it
/// is in, not who is in it nor anything of its API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_shows_the_organisation_as_far_as_the_role_may_read_it() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    for (email, role) in [
        ("viewer@acme.example.com", proto::Role::NanoReadOnly),
        ("operator@acme.example.com", proto::Role::NanoUser),
    ] {
        add_user(&channel, &org, email, role).await;
    }
    let viewer = Session::login(&channel, "viewer@acme.example.com", PASSWORD).await;
    let operator = Session::login(&channel, "operator@acme.example.com", PASSWORD).await;

    let seen = viewer
        .who_am_i()
        .await
        .expect("WhoAmI")
        .organisation
        .expect("organisation");
    assert_eq!(seen.id, org.id.to_string());
    assert_eq!(seen.name, "Acme");
    assert_eq!(seen.user_count, 0, "{seen:?}");
    assert!(seen.role_counts.is_empty(), "{seen:?}");
    assert_eq!(seen.api_key_fingerprint, "", "{seen:?}");
    assert_eq!(seen.api_key_rotated_at, None, "{seen:?}");
    assert_status(
        OrganisationServiceClient::new(channel.clone())
            .get_organisation(viewer.req(proto::GetOrganisationRequest::default()))
            .await,
        tonic::Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );

    // A role with users.read sees what GetOrganisation shows it.
    let full = operator
        .who_am_i()
        .await
        .expect("WhoAmI")
        .organisation
        .expect("organisation");
    assert_eq!(full.user_count, 3);
    assert!(!full.api_key_fingerprint.is_empty());
}
