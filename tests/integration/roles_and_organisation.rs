use usermgmt::proto::{
    self, organisation_service_client::OrganisationServiceClient,
    role_service_client::RoleServiceClient,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_roles_serves_the_matrix() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    insert_user(
        &server.db,
        org.id,
        "viewer@acme.example.com",
        "nanoReadOnly",
    )
    .await;
    let channel = server.channel().await;
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
            "metrics.read"
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
    insert_user(&server.db, org.id, "a@acme.example.com", "nanoUser").await;
    insert_user(&server.db, org.id, "b@acme.example.com", "nanoUser").await;
    let channel = server.channel().await;
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
