//! The mail templates: `{{name}}` placeholders in plain text, HTML and a
//! one-line subject, checked once when the mailer is built so that sending
//! can never meet an unknown placeholder.

use std::fmt::Write as _;
use std::path::Path;

use super::MailError;

/// A value that a template may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Var {
    Link,
    ValidMinutes,
    Organisation,
    Role,
    ExpiresAt,
    Email,
}

impl Var {
    const ALL: [Var; 6] = [
        Var::Link,
        Var::ValidMinutes,
        Var::Organisation,
        Var::Role,
        Var::ExpiresAt,
        Var::Email,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Var::Link => "link",
            Var::ValidMinutes => "valid_minutes",
            Var::Organisation => "organisation",
            Var::Role => "role",
            Var::ExpiresAt => "expires_at",
            Var::Email => "email",
        }
    }
}

/// The kinds of mail, each with its templates and the values it offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    PasswordReset,
    Invite,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::PasswordReset => "password_reset",
            Kind::Invite => "invite",
        }
    }

    /// The placeholders the templates of this kind may use.
    pub(crate) fn vars(self) -> &'static [Var] {
        match self {
            Kind::PasswordReset => &[Var::Link, Var::ValidMinutes, Var::Email],
            Kind::Invite => &[
                Var::Link,
                Var::Organisation,
                Var::Role,
                Var::ExpiresAt,
                Var::Email,
            ],
        }
    }
}

/// Which of a kind's three templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "txt",
            Part::Html => "html",
        }
    }
}

/// The file name of a template, as in `templates/mail/` and in a
/// deployment's templates directory.
pub(crate) fn file_name(kind: Kind, part: Part) -> String {
    format!("{}.{}", kind.name(), part.suffix())
}

macro_rules! default_template {
    ($file:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/mail/",
            $file
        ))
    };
}

fn default_source(kind: Kind, part: Part) -> &'static str {
    match (kind, part) {
        (Kind::PasswordReset, Part::Subject) => default_template!("password_reset.subject.txt"),
        (Kind::PasswordReset, Part::Text) => default_template!("password_reset.txt"),
        (Kind::PasswordReset, Part::Html) => default_template!("password_reset.html"),
        (Kind::Invite, Part::Subject) => default_template!("invite.subject.txt"),
        (Kind::Invite, Part::Text) => default_template!("invite.txt"),
        (Kind::Invite, Part::Html) => default_template!("invite.html"),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Value(Var),
}

/// One parsed template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `source`, accepting only the placeholders of `kind`; a subject
    /// is trimmed and must be one non-empty line.
    pub(crate) fn parse(kind: Kind, part: Part, source: &str) -> Result<Template, String> {
        let source = match part {
            Part::Subject => {
                let line = source.trim();
                if line.is_empty() {
                    return Err("the subject is empty".into());
                }
                if line.contains(['\r', '\n']) {
                    return Err("the subject must be one line".into());
                }
                line
            }
            Part::Text | Part::Html => source,
        };
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| "a `{{` without its closing `}}`".to_owned())?;
            let name = after[..end].trim();
            let var = Var::ALL
                .into_iter()
                .find(|var| var.name() == name)
                .filter(|var| kind.vars().contains(var))
                .ok_or_else(|| {
                    let allowed: Vec<String> = kind
                        .vars()
                        .iter()
                        .map(|var| format!("{{{{{}}}}}", var.name()))
                        .collect();
                    format!(
                        "unknown placeholder `{{{{{}}}}}` (this template may use {})",
                        name.escape_debug(),
                        allowed.join(", ")
                    )
                })?;
            pieces.push(Piece::Value(var));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// The template with each placeholder replaced by its value in `values`
    /// (HTML-escaped when `html`); a placeholder without a value renders as
    /// nothing, which `Kind::vars` and `Template::parse` rule out.
    pub(crate) fn render(&self, values: &[(Var, &str)], html: bool) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Value(var) => {
                    let value = values
                        .iter()
                        .find(|(candidate, _)| candidate == var)
                        .map_or("", |(_, value)| value);
                    if html {
                        escape_html(value, &mut out);
                    } else {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }

    /// The placeholders this template uses.
    pub(crate) fn uses(&self) -> impl Iterator<Item = Var> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Value(var) => Some(*var),
            Piece::Literal(_) => None,
        })
    }
}

/// The three templates of one kind of mail.
#[derive(Clone, Debug)]
pub(crate) struct Templates {
    pub(crate) subject: Template,
    pub(crate) text: Template,
    pub(crate) html: Template,
}

/// The templates of every kind of mail.
#[derive(Clone, Debug)]
pub(crate) struct TemplateSet {
    pub(crate) password_reset: Templates,
    pub(crate) invite: Templates,
}

impl TemplateSet {
    /// The embedded defaults, each replaced by the file of the same name in
    /// `dir` when there is one.
    pub(crate) fn load(dir: Option<&Path>) -> Result<TemplateSet, MailError> {
        if let Some(dir) = dir
            && !dir.is_dir()
        {
            return Err(MailError::TemplatesDir {
                path: dir.to_path_buf(),
            });
        }
        Ok(TemplateSet {
            password_reset: load_kind(Kind::PasswordReset, dir)?,
            invite: load_kind(Kind::Invite, dir)?,
        })
    }

    pub(crate) fn get(&self, kind: Kind) -> &Templates {
        match kind {
            Kind::PasswordReset => &self.password_reset,
            Kind::Invite => &self.invite,
        }
    }
}

fn load_kind(kind: Kind, dir: Option<&Path>) -> Result<Templates, MailError> {
    Ok(Templates {
        subject: load_one(kind, Part::Subject, dir)?,
        text: load_one(kind, Part::Text, dir)?,
        html: load_one(kind, Part::Html, dir)?,
    })
}

fn load_one(kind: Kind, part: Part, dir: Option<&Path>) -> Result<Template, MailError> {
    let file = file_name(kind, part);
    let overridden = match dir {
        Some(dir) => {
            let path = dir.join(&file);
            match std::fs::read_to_string(&path) {
                Ok(source) => Some((source, path)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(MailError::Template {
                        file: path.display().to_string(),
                        reason: format!("cannot read it: {error}"),
                    });
                }
            }
        }
        None => None,
    };
    match overridden {
        Some((source, path)) => {
            Template::parse(kind, part, &source).map_err(|reason| MailError::Template {
                file: path.display().to_string(),
                reason,
            })
        }
        None => Template::parse(kind, part, default_source(kind, part)).map_err(|reason| {
            MailError::Template {
                file: format!("templates/mail/{file} (built in)"),
                reason,
            }
        }),
    }
}

/// Appends `value` to `out` with `&`, `<`, `>`, `"` and `'` escaped.
pub(crate) fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `value` percent-encoded for a URL's query: all but the unreserved
/// characters of RFC 3986.
pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
