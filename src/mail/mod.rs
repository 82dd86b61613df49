//! Mail to users over SMTP: password resets and invitations.
//!
//! Each message is `multipart/alternative` with a plain-text and an HTML
//! part, both quoted-printable. Subject, text and HTML come from templates:
//! the defaults are built in from `templates/mail/`, and a deployment may
//! replace any of them with a file of the same name in its templates
//! directory. They are minijinja templates; the variables are `link`,
//! `valid_minutes`, `organisation`, `role`, `expires_at` and `email`, any
//! other is an error, and values are HTML-escaped in the HTML part.
//!
//! The SMTP server is given as a URL, read by lettre:
//! `smtp://host:port` is plain SMTP (no TLS at all),
//! `smtp://host:port?tls=required` is STARTTLS that must succeed,
//! `smtp://host:port?tls=opportunistic` is STARTTLS when offered, and
//! `smtps://user:password@host:465` is TLS from the first byte (implicit
//! TLS). Credentials go in the URL's user information, percent-encoded.
//! Certificates are checked against the Mozilla roots built into the binary.

mod template;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use email_encoding::headers::writer::EmailWriter;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::header::ContentType;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use template::{Kind, Part, TemplateSet, Var};

/// How long one SMTP command (connecting included) may take.
pub const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sending one message may take altogether.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the mailer is built from.
#[derive(Clone, Default)]
pub struct MailSettings {
    /// `smtp://host:port`, `smtps://user:password@host:465`, …; `None`
    /// turns mail off.
    pub smtp_url: Option<String>,
    /// The sender, `noreply@example.com` or `Example <noreply@example.com>`.
    pub from: String,
    /// The dashboard's base URL, `https://dashboard.example.com`; links in
    /// mail point below it.
    pub public_url: String,
    /// A directory whose files replace the built-in templates of the same
    /// name.
    pub templates_dir: Option<PathBuf>,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field(
                "smtp_url",
                &self
                    .smtp_url
                    .as_deref()
                    .map(|url| Redacted(redact_url(url))),
            )
            .field("from", &self.from)
            .field("public_url", &self.public_url)
            .field("templates_dir", &self.templates_dir)
            .finish()
    }
}

/// Why the mailer could not be built or a mail not sent. Neither `Display`
/// nor `Debug` shows a token, a link or the SMTP password.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid SMTP URL {url}: {reason}")]
    SmtpUrl {
        /// The URL with its user information redacted.
        url: String,
        reason: String,
    },
    #[error("invalid sender address {from:?}: {reason}")]
    From { from: String, reason: String },
    #[error(
        "invalid public URL: it must be an http:// or https:// URL with a host and \
         without user information, query or fragment"
    )]
    PublicUrl,
    #[error("the mail templates directory {path} is not a readable directory")]
    TemplatesDir { path: PathBuf },
    #[error("mail template {file}: {reason}")]
    Template { file: String, reason: String },
    #[error("invalid recipient address")]
    Recipient,
    #[error("the {field} contains a line break and cannot go into the subject")]
    Subject { field: &'static str },
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP delivery failed: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("SMTP delivery did not finish within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Sends the mail. Cheap to clone: clones share one transport.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// The SMTP URL with its user information redacted, for `Debug` and logs.
    server: String,
    has_credentials: bool,
    from: Mailbox,
    public_url: String,
    templates: TemplateSet,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Mailer")
            .field("server", &inner.server)
            .field(
                "credentials",
                &if inner.has_credentials {
                    "redacted"
                } else {
                    "none"
                },
            )
            .field("from", &inner.from.to_string())
            .field("public_url", &inner.public_url)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer of `settings`, `None` when `smtp_url` is `None` (mail is
    /// off). Reads the templates directory once, here.
    pub fn from_settings(settings: &MailSettings) -> Result<Option<Mailer>, MailError> {
        let Some(url) = settings.smtp_url.as_deref() else {
            return Ok(None);
        };
        let server = redact_url(url);
        let password = url_password(url);
        let smtp_error = |reason: String| {
            // lettre's messages do not quote the URL; scrub it all the same.
            let reason = match password.filter(|p| !p.is_empty()) {
                Some(password) => reason.replace(password, "redacted"),
                None => reason,
            };
            MailError::SmtpUrl {
                url: server.clone(),
                reason,
            }
        };
        if url_userinfo_range(url).is_some() && password.is_none_or(str::is_empty) {
            return Err(smtp_error(
                "a user name without a password: give both, or neither".into(),
            ));
        }
        let plain = url
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("smtp://"))
            && !url.contains("tls=required");
        if plain && password.is_some() {
            tracing::warn!(
                server = %server,
                "the SMTP password may go over a connection without TLS: \
                 use smtps:// or ?tls=required"
            );
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| smtp_error(e.to_string()))?
            .timeout(Some(SMTP_COMMAND_TIMEOUT))
            .build();
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::From {
                from: settings.from.clone(),
                reason: e.to_string(),
            })?;
        let public_url = normalise_public_url(&settings.public_url)?;
        let templates = TemplateSet::load(settings.templates_dir.as_deref())?;
        Ok(Some(Mailer {
            inner: Arc::new(Inner {
                transport,
                server: server.clone(),
                has_credentials: password.is_some(),
                from,
                public_url,
                templates,
            }),
        }))
    }

    /// Sends `to` the link `{public_url}/reset-password#token={token}`,
    /// valid for `valid_minutes`.
    pub async fn send_password_reset(
        &self,
        to: &str,
        token: &str,
        valid_minutes: u32,
    ) -> Result<(), MailError> {
        let link = self.link("reset-password", token);
        let valid_minutes = valid_minutes.to_string();
        self.send(
            Kind::PasswordReset,
            to,
            &[(Var::Link, &link), (Var::ValidMinutes, &valid_minutes)],
        )
        .await
    }

    /// Sends `to` an invitation to join `organisation_name` as `role`, with
    /// the link `{public_url}/accept-invite#token={token}`.
    pub async fn send_invite(
        &self,
        to: &str,
        token: &str,
        organisation_name: &str,
        role: &str,
        expires_at_rfc3339: &str,
    ) -> Result<(), MailError> {
        let link = self.link("accept-invite", token);
        self.send(
            Kind::Invite,
            to,
            &[
                (Var::Link, &link),
                (Var::Organisation, organisation_name),
                (Var::Role, role),
                (Var::ExpiresAt, expires_at_rfc3339),
            ],
        )
        .await
    }

    /// The link to the dashboard's `page` that carries `token`: in the
    /// fragment, which browsers do not send, so that the token stays out of
    /// the logs of the dashboard's servers and of every proxy on the way
    /// (and out of `Referer` headers); the page reads it from the address.
    fn link(&self, page: &str, token: &str) -> String {
        format!(
            "{}/{page}#token={}",
            self.inner.public_url,
            template::percent_encode(token)
        )
    }

    /// Sends, and logs the outcome at debug level only: the caller decides
    /// what a failure means (and logs or counts it).
    async fn send(&self, kind: Kind, to: &str, values: &[(Var, &str)]) -> Result<(), MailError> {
        let result = self.try_send(kind, to, values).await;
        match &result {
            Ok(()) => tracing::debug!(mail = kind.name(), server = %self.inner.server, "mail sent"),
            Err(error) => tracing::debug!(
                mail = kind.name(),
                server = %self.inner.server,
                %error,
                "mail not sent"
            ),
        }
        result
    }

    async fn try_send(
        &self,
        kind: Kind,
        to: &str,
        values: &[(Var, &str)],
    ) -> Result<(), MailError> {
        let message = self.compose(kind, to, values)?;
        match tokio::time::timeout(SEND_TIMEOUT, self.inner.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) => Err(MailError::Smtp(error)),
            Err(_elapsed) => Err(MailError::Timeout(SEND_TIMEOUT)),
        }
    }

    /// The message of `kind` to `to`, its templates rendered with `values`
    /// and the recipient's address as `{{email}}`.
    fn compose(&self, kind: Kind, to: &str, values: &[(Var, &str)]) -> Result<Message, MailError> {
        let address: Address = to.trim().parse().map_err(|_| MailError::Recipient)?;
        let email = address.to_string();
        let mut values = values.to_vec();
        values.push((Var::Email, &email));

        let templates = &self.inner.templates;
        if let Some(var) = templates
            .uses(kind, Part::Subject)
            .iter()
            .find(|var| has_line_break(lookup(&values, **var)))
        {
            return Err(MailError::Subject { field: var.name() });
        }
        let subject = templates.render(kind, Part::Subject, &values)?;
        // The values were checked above; this catches a break that the
        // template itself writes (a string literal such as "\n").
        if has_line_break(&subject) {
            return Err(MailError::Template {
                file: template::file_name(kind, Part::Subject),
                reason: "the rendered subject has a line break".into(),
            });
        }
        let text = templates.render(kind, Part::Text, &values)?;
        let html = templates.render(kind, Part::Html, &values)?;

        Ok(Message::builder()
            .from(self.inner.from.clone())
            .to(Mailbox::new(None, address))
            .raw_header(subject_header(&subject)?)
            .message_id(Some(self.message_id()))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, text))
                    .singlepart(part(ContentType::TEXT_HTML, html)),
            )?)
    }
}

impl Mailer {
    /// A new `Message-ID`: a random id at the sender's domain. lettre's own
    /// names the machine (its host name), which is no recipient's business.
    fn message_id(&self) -> String {
        format!(
            "<{}@{}>",
            uuid::Uuid::new_v4(),
            self.inner.from.email.domain()
        )
    }
}

/// The `Subject` header of `subject`, so that every decoder reads exactly
/// `subject`. Printable ASCII without `=?` goes as it is (folded by lettre).
/// Anything else, in particular text that looks like an RFC 2047 encoded word
/// (an organisation may be named `=?utf-8?q?Acme=0D=0ABcc:…?=`, which lettre
/// would pass through as ASCII and a mail reader decode), is sent wholly as
/// base64 encoded words of UTF-8, each at most 75 characters, folded: there
/// is then no text outside them to be taken for one.
fn subject_header(subject: &str) -> Result<HeaderValue, MailError> {
    let name = HeaderName::new_from_ascii_str("Subject");
    let plain = subject.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !subject.contains("=?")
        && subject.trim() == subject;
    if plain {
        return Ok(HeaderValue::new(name, subject.to_owned()));
    }
    let mut encoded = String::new();
    {
        let mut writer = EmailWriter::new(&mut encoded, "Subject: ".len(), 0, false);
        // Writing to a String does not fail; map it all the same.
        email_encoding::headers::rfc2047::encode(subject, &mut writer).map_err(|_| {
            MailError::Template {
                file: "subject".into(),
                reason: "the subject cannot be encoded".into(),
            }
        })?;
    }
    Ok(HeaderValue::dangerous_new_pre_encoded(
        name,
        subject.to_owned(),
        encoded,
    ))
}

/// A quoted-printable part: 7-bit clean for any relay, whatever the text.
fn part(content_type: ContentType, text: String) -> SinglePart {
    let body = Body::new_with_encoding(text, ContentTransferEncoding::QuotedPrintable)
        .unwrap_or_else(Body::new);
    SinglePart::builder().header(content_type).body(body)
}

fn lookup<'a>(values: &[(Var, &'a str)], var: Var) -> &'a str {
    values
        .iter()
        .find(|(candidate, _)| *candidate == var)
        .map_or("", |(_, value)| value)
}

fn has_line_break(value: &str) -> bool {
    value.contains(['\r', '\n'])
}

/// `public_url` checked (http or https, a host, no user information, query
/// or fragment) with its trailing slashes removed.
fn normalise_public_url(public_url: &str) -> Result<String, MailError> {
    let lower = public_url.to_ascii_lowercase();
    let rest_at = if lower.starts_with("https://") {
        8
    } else if lower.starts_with("http://") {
        7
    } else {
        return Err(MailError::PublicUrl);
    };
    if public_url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '"' | '<' | '>'))
    {
        return Err(MailError::PublicUrl);
    }
    let rest = &public_url[rest_at..];
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.starts_with(':') {
        return Err(MailError::PublicUrl);
    }
    let trimmed = public_url.trim_end_matches('/');
    Ok(format!("{}{}", &lower[..rest_at], &trimmed[rest_at..]))
}

/// Where the user information of a URL starts and ends, if it has any:
/// everything between `://` and the last `@`, so that a password with an
/// unencoded `/`, `?` or `#` is still taken for one (and never shown).
fn url_userinfo_range(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map_or(0, |at| at + 3);
    url[start..].rfind('@').map(|at| (start, start + at))
}

/// The (still percent-encoded) password of a URL, if it has one.
fn url_password(url: &str) -> Option<&str> {
    let (start, end) = url_userinfo_range(url)?;
    url[start..end]
        .split_once(':')
        .map(|(_, password)| password)
}

/// `url` with its user information, if any, shown as `redacted`
/// (`smtps://redacted@host:465`).
fn redact_url(url: &str) -> String {
    match url_userinfo_range(url) {
        Some((start, end)) => format!("{}redacted{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    }
}

/// A string shown without quotes in `Debug`.
struct Redacted(String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
