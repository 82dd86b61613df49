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

/// Texts that make a name look like another or hide text in it, as emails
/// refuse them: bidi overrides and isolates, zero width characters, BOM,
/// soft hyphen, tag characters, Hangul filler, line separator.
const UNREADABLE: [&str; 9] = [
    "Acme\u{202E}moc.evil",
    "Ac\u{200B}me",
    "\u{2066}Acme\u{2069}",
    "Acme\u{FEFF}",
    "Ac\u{00AD}me",
    "Acme\u{E0041}\u{E0042}",
    "Ac\u{3164}me",
    "Ac\u{2028}me",
    "Ac\u{200D}me",
];

/// Organisation names and personal API token names are read by other
/// people: invisible and bidirectional characters are refused, INVALID_ARGUMENT
/// naming the field, whichever way the name comes in (UpdateOrganisation,
/// the bootstrap command's function, CreateApiToken), and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_refuse_invisible_and_bidirectional_characters() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut organisations = OrganisationServiceClient::new(channel.clone());
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    for bad in UNREADABLE {
        let status = assert_status(
            organisations
                .update_organisation(authed(rename_organisation(bad), &token))
                .await,
            tonic::Code::InvalidArgument,
            None,
        );
        assert_eq!(violated_fields(&status), ["organisation.name"], "{bad:?}");

        let created = usermgmt::app::provisioning::bootstrap(
            &store(&server.db),
            &passwords,
            bad,
            "founder@other.example.com",
            ADMIN_PASSWORD,
        )
        .await;
        match created {
            Err(usermgmt::domain::DomainError::InvalidArgument(violations)) => {
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(fields, ["organisation"], "{bad:?}");
            }
            other => panic!("bootstrap {bad:?}: {other:?}"),
        }

        let status = assert_status(
            proto::api_token_service_client::ApiTokenServiceClient::new(channel.clone())
                .create_api_token(authed(
                    proto::CreateApiTokenRequest {
                        name: bad.into(),
                        expires_at: Some(prost_types::Timestamp {
                            seconds: now_seconds() + 86_400,
                            nanos: 0,
                        }),
                        permissions: Vec::new(),
                    },
                    &token,
                ))
                .await,
            tonic::Code::InvalidArgument,
            None,
        );
        assert_eq!(violated_fields(&status), ["name"], "{bad:?}");
    }
    let organisation = organisations
        .get_organisation(authed(proto::GetOrganisationRequest {}, &token))
        .await
        .expect("organisation")
        .into_inner()
        .organisation
        .expect("organisation");
    assert_eq!(organisation.name, "Acme", "no refused name was stored");
    let count: i64 = server
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM organisations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1, "bootstrap created nothing");
    // What stays allowed: accents, other scripts, emoji with their
    // variation selector, and text that looks like an encoded word.
    for good in [
        "Bücher & Söhne",
        "東京ストリーム",
        "Acme ❤\u{FE0F}",
        "=?utf-8?q?Acme?=",
    ] {
        organisations
            .update_organisation(authed(rename_organisation(good), &token))
            .await
            .unwrap_or_else(|status| panic!("{good:?}: {status:?}"));
    }
}
