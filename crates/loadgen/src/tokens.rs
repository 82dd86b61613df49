//! Access tokens of many users, from `usermgmt bench-tokens` (run here, as
//! a child process, on the server's database): N logins would cost N
//! argon2id verifications.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt as _;
use uuid::Uuid;

use crate::BoxError;

/// The `usermgmt` binary to run, and what it needs to know of the server.
pub struct TokenSource<'a> {
    pub usermgmt: PathBuf,
    pub database_url: &'a str,
    pub key_encryption_key: Option<&'a str>,
    pub jwt_secret: Option<&'a str>,
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Only users of this organisation; `None`: of every organisation.
    pub organisation_id: Option<Uuid>,
}

/// The `usermgmt` beside loadgen's own executable (as in the target
/// directory), or else the one on the `PATH`.
pub fn default_usermgmt() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("usermgmt")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("usermgmt"))
}

/// One user's access token, and the organisation it acts in.
#[derive(Debug)]
pub struct UserToken {
    pub organisation_id: String,
    pub access_token: String,
}

/// An access token for each of the first `count` users (by id).
pub async fn tokens_of_users(
    source: &TokenSource<'_>,
    count: u32,
) -> Result<Vec<UserToken>, BoxError> {
    let mut command = tokio::process::Command::new(&source.usermgmt);
    command
        .arg("bench-tokens")
        .arg("--users")
        .arg(count.to_string())
        // The settings go in the environment, where no process list shows them.
        .env("DATABASE_URL", source.database_url)
        .env("USERMGMT_TOKEN_ISSUER", source.issuer)
        .env("USERMGMT_TOKEN_AUDIENCE", source.audience)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(organisation_id) = source.organisation_id {
        command
            .arg("--organisation-id")
            .arg(organisation_id.to_string());
    }
    for (variable, value) in [
        ("USERMGMT_KEY_ENCRYPTION_KEY", source.key_encryption_key),
        ("USERMGMT_JWT_SECRET", source.jwt_secret),
    ] {
        match value {
            Some(value) => command.env(variable, value),
            None => command.env_remove(variable),
        };
    }
    if std::env::var_os("USERMGMT_LOG").is_none() {
        command.env("USERMGMT_LOG", "warn");
    }
    let mut child = command.spawn().map_err(|e| {
        format!(
            "cannot run {} (give --usermgmt-bin): {e}",
            source.usermgmt.display()
        )
    })?;
    let stdout = child
        .stdout
        .take()
        .ok_or("usermgmt bench-tokens: no standard output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut tokens = Vec::with_capacity(count as usize);
    while let Some(line) = lines.next_line().await? {
        let token = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|value| {
                Some(UserToken {
                    organisation_id: value.get("organisation_id")?.as_str()?.to_owned(),
                    access_token: value.get("access_token")?.as_str()?.to_owned(),
                })
            })
            .ok_or(
                "usermgmt bench-tokens printed a line without an organisation_id and an access_token",
            )?;
        tokens.push(token);
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(
            format!("usermgmt bench-tokens failed ({status}); see its message above").into(),
        );
    }
    if tokens.len() != count as usize {
        return Err(format!(
            "usermgmt bench-tokens printed {} tokens, not {count}",
            tokens.len()
        )
        .into());
    }
    Ok(tokens)
}
