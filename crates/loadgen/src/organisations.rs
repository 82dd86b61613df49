//! What the same-organisation write scenarios (`issue_playback`,
//! `issue_playback_orgs`, `login`, `login_orgs`) need before they are
//! measured: a credential of each of `--organisations` organisations, each
//! organisation secure and holding a playback signing key, and the users
//! the login scenarios sign in as, each signed in once already.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use usermgmt_proto as proto;
use usermgmt_proto::auth_service_client::AuthServiceClient;
use usermgmt_proto::organisation_service_client::OrganisationServiceClient;
use usermgmt_proto::playback_token_service_client::PlaybackTokenServiceClient;
use usermgmt_proto::user_service_client::UserServiceClient;

use crate::cli::Args;
use crate::scenarios::Scenario;
use crate::session::{Session, token_source};
use crate::{BoxError, tokens};

/// How long after the call a playback token of `issue_playback*` expires.
pub const PLAYBACK_TTL: Duration = Duration::from_secs(300);

/// How many setup logins run at once: below the server's default bound of
/// password hashes queued per caller (8).
const SETUP_LOGINS_IN_FLIGHT: usize = 4;

/// A user the login scenarios sign in as.
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub organisation_id: String,
    pub email: String,
}

/// One organisation's credential: the access token of one of its users
/// with `playback_tokens.create` and `users.read`, as the read scenarios
/// present it (`--token-header`).
struct Credential {
    organisation_id: String,
    header: &'static str,
    value: AsciiMetadataValue,
}

impl Credential {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(self.header, self.value.clone());
        request
    }
}

/// Prepares what the requested same-organisation write scenarios need, in
/// `session`.
pub async fn prepare(
    endpoint: &Endpoint,
    args: &Args,
    session: &mut Session,
) -> Result<(), BoxError> {
    let wants = |scenario| args.scenarios.contains(&scenario);
    if !(wants(Scenario::IssuePlayback)
        || wants(Scenario::IssuePlaybackOrgs)
        || wants(Scenario::Login)
        || wants(Scenario::LoginOrgs))
    {
        return Ok(());
    }
    let started = Instant::now();
    let channel = endpoint.connect().await?;
    let own = Credential {
        organisation_id: session.signed_in_organisation_id.clone(),
        header: session.read_credential.0,
        value: session.read_credential.1.clone(),
    };
    let others = if wants(Scenario::IssuePlaybackOrgs) || wants(Scenario::LoginOrgs) {
        organisation_credentials(args).await?
    } else {
        Vec::new()
    };
    if wants(Scenario::IssuePlayback) {
        ready_to_issue(&channel, &own).await?;
    }
    if wants(Scenario::IssuePlaybackOrgs) {
        for credential in &others {
            ready_to_issue(&channel, credential).await?;
        }
        session.organisation_credentials = others
            .iter()
            .map(|credential| credential.value.clone())
            .collect();
    }
    if wants(Scenario::Login) {
        session.login_users = login_users(&channel, &own, args).await?;
    }
    if wants(Scenario::LoginOrgs) {
        let mut per_organisation = Vec::with_capacity(others.len());
        for credential in &others {
            per_organisation.push(login_users(&channel, credential, args).await?);
        }
        // Organisation by organisation in turn: consecutive calls sign in
        // to different organisations.
        session.login_users_orgs = in_turn(per_organisation);
    }
    let signed_in = sign_in_once(&channel, session).await?;
    eprintln!(
        "loadgen: same-organisation writes prepared in {} ms ({} organisation(s), \
         {signed_in} user(s) signed in once)",
        started.elapsed().as_millis(),
        if others.is_empty() { 1 } else { others.len() },
    );
    Ok(())
}

/// Credentials of `--organisations` distinct organisations: the first
/// `--organisations` users by id, from `usermgmt bench-tokens`.
async fn organisation_credentials(args: &Args) -> Result<Vec<Credential>, BoxError> {
    let wanted = args.organisations;
    let seed = format!(
        "seed a fresh database with `usermgmt seed --organisations {wanted}` (or more) right \
         after `usermgmt bootstrap`, as scripts/bench-writes.sh does"
    );
    let tokens = tokens::tokens_of_users(&token_source(args, None), wanted)
        .await
        .map_err(|e| format!("--organisations {wanted}: {e}; {seed}"))?;
    let distinct: HashSet<&str> = tokens
        .iter()
        .map(|token| token.organisation_id.as_str())
        .collect();
    if distinct.len() != tokens.len() {
        return Err(format!(
            "--organisations {wanted}: the first {wanted} users by id belong to only {} \
             organisation(s); {seed}",
            distinct.len()
        )
        .into());
    }
    tokens
        .into_iter()
        .map(|token| {
            Ok(Credential {
                organisation_id: token.organisation_id,
                header: args.token_header.name(),
                value: args.token_header.value(&token.access_token)?,
            })
        })
        .collect()
}

/// The organisation-wide, revocable playback token request of the
/// `issue_playback*` scenarios, expiring [`PLAYBACK_TTL`] from now.
pub fn playback_request() -> proto::IssuePlaybackTokenRequest {
    let exp = SystemTime::now() + PLAYBACK_TTL;
    let seconds = exp.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    });
    proto::IssuePlaybackTokenRequest {
        scope: Some(proto::PlaybackScope {
            scope: Some(proto::playback_scope::Scope::OrganisationWide(true)),
        }),
        exp: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        revocable: true,
        ..Default::default()
    }
}

/// Makes the organisation secure (`UpdateOrganisation`) if it is not, and
/// issues one playback token, which gives it its signing key: the first
/// issuance of an organisation creates one, the measured ones do not.
async fn ready_to_issue(channel: &Channel, credential: &Credential) -> Result<(), BoxError> {
    let id = &credential.organisation_id;
    let mut organisations = OrganisationServiceClient::new(channel.clone());
    let organisation = organisations
        .get_organisation(credential.request(proto::GetOrganisationRequest {}))
        .await
        .map_err(|s| format!("GetOrganisation of {id}: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .organisation
        .ok_or("GetOrganisation answered no organisation")?;
    if !organisation.secure_playback {
        let request = proto::UpdateOrganisationRequest {
            organisation: Some(proto::Organisation {
                secure_playback: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secure_playback".into()],
            }),
        };
        organisations
            .update_organisation(credential.request(request))
            .await
            .map_err(|s| {
                format!(
                    "making {id} a secure organisation: {:?}: {}",
                    s.code(),
                    s.message()
                )
            })?;
    }
    PlaybackTokenServiceClient::new(channel.clone())
        .issue_playback_token(credential.request(playback_request()))
        .await
        .map_err(|s| {
            format!(
                "issuing a playback token in {id}: {:?}: {}",
                s.code(),
                s.message()
            )
        })?;
    Ok(())
}

/// The first `--login-users` users of the organisation whose email starts
/// with `--email-prefix`, in email order (`ListUsers`).
async fn login_users(
    channel: &Channel,
    credential: &Credential,
    args: &Args,
) -> Result<Vec<LoginUser>, BoxError> {
    let id = &credential.organisation_id;
    let wanted = args.login_users as usize;
    let mut users = UserServiceClient::new(channel.clone());
    let mut found = Vec::with_capacity(wanted);
    let mut page_token = String::new();
    loop {
        let request = proto::ListUsersRequest {
            page_size: i32::try_from(wanted).unwrap_or(i32::MAX),
            page_token,
            email_prefix: args.email_prefix.clone(),
            ..Default::default()
        };
        let page = users
            .list_users(credential.request(request))
            .await
            .map_err(|s| format!("ListUsers of {id}: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        found.extend(page.users.into_iter().map(|user| LoginUser {
            organisation_id: id.clone(),
            email: user.email,
        }));
        page_token = page.next_page_token;
        if found.len() >= wanted || page_token.is_empty() {
            break;
        }
    }
    if found.len() < wanted {
        return Err(format!(
            "--login-users {wanted}: organisation {id} has only {} user(s) whose email starts \
             with {:?}; seed more (`usermgmt seed`)",
            found.len(),
            args.email_prefix
        )
        .into());
    }
    found.truncate(wanted);
    Ok(found)
}

/// Signs every login user in once, a few at a time, so that the measured
/// logins find each user's address already known (a first login from an
/// address also records it) and every password is checked before
/// measuring. Returns how many users signed in.
async fn sign_in_once(channel: &Channel, session: &Session) -> Result<usize, BoxError> {
    let mut seen = HashSet::new();
    let users: Vec<LoginUser> = session
        .login_users
        .iter()
        .chain(&session.login_users_orgs)
        .filter(|user| seen.insert((user.organisation_id.clone(), user.email.clone())))
        .cloned()
        .collect();
    let count = users.len();
    let mut lanes: Vec<Vec<LoginUser>> = vec![Vec::new(); SETUP_LOGINS_IN_FLIGHT];
    for (index, user) in users.into_iter().enumerate() {
        lanes[index % SETUP_LOGINS_IN_FLIGHT].push(user);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let mut auth = AuthServiceClient::new(channel.clone());
            let password = session.login_password.clone();
            tokio::spawn(async move {
                for user in lane {
                    auth.login(login_request(&user, &password))
                        .await
                        .map_err(|s| {
                            format!(
                                "signing in as {} (--login-password): {:?}: {}",
                                user.email,
                                s.code(),
                                s.message()
                            )
                        })?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(count)
}

/// The first item of each list, then the second of each, and so on:
/// consecutive items come from different lists (of equal length).
fn in_turn<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut iterators: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut merged = Vec::new();
    loop {
        let before = merged.len();
        merged.extend(iterators.iter_mut().filter_map(Iterator::next));
        if merged.len() == before {
            return merged;
        }
    }
}

pub fn login_request(user: &LoginUser, password: &str) -> proto::LoginRequest {
    proto::LoginRequest {
        email: user.email.clone(),
        password: password.to_owned(),
        organisation_id: user.organisation_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::in_turn;

    #[test]
    fn consecutive_logins_go_to_different_organisations() {
        let lists = vec![vec!["a1", "a2"], vec!["b1", "b2"], vec!["c1", "c2"]];
        assert_eq!(in_turn(lists), ["a1", "b1", "c1", "a2", "b2", "c2"]);
    }
}
