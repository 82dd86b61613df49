//! The mail templates: minijinja templates for a one-line subject, plain text
//! and HTML, checked once when the mailer is built so that sending can never
//! meet an unknown variable or a template that does not parse.
//!
//! Undefined variables are errors (`UndefinedBehavior::Strict`), and values
//! are HTML-escaped in the `.html` templates only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

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
    const ALL: [Kind; 2] = [Kind::PasswordReset, Kind::Invite];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::PasswordReset => "password_reset",
            Kind::Invite => "invite",
        }
    }

    /// The variables the templates of this kind may use.
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
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "txt",
            Part::Html => "html",
        }
    }
}

/// The file name of a template, as in `templates/mail/` and in a
/// deployment's templates directory; also its name in the environment, whose
/// extension turns HTML escaping on.
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

/// The environment every mail template is compiled in.
fn environment() -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // minijinja also escapes `/` (and writes `'` as `&#x27;`); the mails
    // keep the five characters and entities they have always had, so that
    // links read the same in the HTML part as in the text.
    env.set_formatter(|out, state, value| {
        if *state.auto_escape() == AutoEscape::Html && !value.is_safe() {
            let mut escaped = String::new();
            match value.as_str() {
                Some(text) => escape_html(text, &mut escaped),
                None => escape_html(&value.to_string(), &mut escaped),
            }
            out.write_str(&escaped).map_err(minijinja::Error::from)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    // A file's final line break stays, as it is in the file.
    let syntax = SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(|error| error.to_string())?;
    env.set_syntax(syntax);
    Ok(env)
}

/// The templates of every kind of mail, compiled, and the variables each one
/// uses.
#[derive(Debug)]
pub(crate) struct TemplateSet {
    env: Environment<'static>,
    /// For each kind and part (in the order of `Kind::ALL` and `Part::ALL`),
    /// the variables the template uses, in the order of `Kind::vars`.
    uses: Vec<((Kind, Part), Vec<Var>)>,
}

impl TemplateSet {
    /// The embedded defaults, each replaced by the file of the same name in
    /// `dir` when there is one; every template is compiled and rendered once
    /// here, so that one that does not parse or asks for a variable its kind
    /// does not offer fails now rather than when a mail is sent.
    pub(crate) fn load(dir: Option<&Path>) -> Result<TemplateSet, MailError> {
        if let Some(dir) = dir
            && !dir.is_dir()
        {
            return Err(MailError::TemplatesDir {
                path: dir.to_path_buf(),
            });
        }
        let mut set = TemplateSet {
            env: environment().map_err(|reason| MailError::Template {
                file: "templates/mail".into(),
                reason,
            })?,
            uses: Vec::new(),
        };
        for kind in Kind::ALL {
            for part in Part::ALL {
                let (source, shown) = source(kind, part, dir)?;
                let uses = set
                    .add(kind, part, source)
                    .map_err(|reason| MailError::Template {
                        file: shown,
                        reason,
                    })?;
                set.uses.push(((kind, part), uses));
            }
        }
        Ok(set)
    }

    /// Compiles `source` as the `part` template of `kind`, accepting only the
    /// variables of `kind`, and tries it on a value for each; a subject is
    /// trimmed and must be one non-empty line. Returns the variables it uses.
    fn add(&mut self, kind: Kind, part: Part, source: String) -> Result<Vec<Var>, String> {
        let source = match part {
            Part::Subject => {
                let line = source.trim();
                if line.is_empty() {
                    return Err("the subject is empty".into());
                }
                if line.contains(['\r', '\n']) {
                    return Err("the subject must be one line".into());
                }
                line.to_owned()
            }
            Part::Text | Part::Html => source,
        };
        let name = file_name(kind, part);
        self.env
            .add_template_owned(name.clone(), source)
            .map_err(|error| format!("it does not parse: {}", describe(&error)))?;
        let template = self
            .env
            .get_template(&name)
            .map_err(|error| describe(&error))?;
        let used = template.undeclared_variables(false);
        if let Some(unknown) = used
            .iter()
            .find(|name| !kind.vars().iter().any(|var| var.name() == name.as_str()))
        {
            let allowed: Vec<String> = kind
                .vars()
                .iter()
                .map(|var| format!("{{{{{}}}}}", var.name()))
                .collect();
            return Err(format!(
                "unknown variable `{{{{{}}}}}` (this template may use {})",
                unknown.escape_debug(),
                allowed.join(", ")
            ));
        }
        let samples: Vec<(Var, &str)> = kind.vars().iter().map(|var| (*var, var.name())).collect();
        let rendered = template
            .render(context(&samples))
            .map_err(|error| format!("it does not render: {}", describe(&error)))?;
        if part == Part::Subject && rendered.contains(['\r', '\n']) {
            return Err("the subject must be one line".into());
        }
        Ok(kind
            .vars()
            .iter()
            .copied()
            .filter(|var| used.contains(var.name()))
            .collect())
    }

    /// The `part` template of `kind` rendered with `values`; a variable
    /// without a value is an error, which `Kind::vars` and the check in
    /// `TemplateSet::load` rule out for the values the mailer gives.
    pub(crate) fn render(
        &self,
        kind: Kind,
        part: Part,
        values: &[(Var, &str)],
    ) -> Result<String, MailError> {
        let name = file_name(kind, part);
        self.env
            .get_template(&name)
            .and_then(|template| template.render(context(values)))
            .map_err(|error| MailError::Template {
                file: name,
                // Only the kind of error and where: its detail might quote
                // a value, and a value may be a link with its token.
                reason: format!(
                    "cannot render it: {}{}",
                    error.kind(),
                    error
                        .line()
                        .map(|line| format!(" (line {line})"))
                        .unwrap_or_default()
                ),
            })
    }

    /// The variables the `part` template of `kind` uses.
    pub(crate) fn uses(&self, kind: Kind, part: Part) -> &[Var] {
        self.uses
            .iter()
            .find(|(which, _)| *which == (kind, part))
            .map_or(&[], |(_, vars)| vars.as_slice())
    }
}

/// The template's source and the name to show for it in errors: the file in
/// `dir` when there is one, else the built-in default.
fn source(kind: Kind, part: Part, dir: Option<&Path>) -> Result<(String, String), MailError> {
    let file = file_name(kind, part);
    if let Some(dir) = dir {
        let path = dir.join(&file);
        match std::fs::read_to_string(&path) {
            Ok(source) => return Ok((source, path.display().to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(MailError::Template {
                    file: path.display().to_string(),
                    reason: format!("cannot read it: {error}"),
                });
            }
        }
    }
    Ok((
        default_source(kind, part).to_owned(),
        format!("templates/mail/{file} (built in)"),
    ))
}

fn context(values: &[(Var, &str)]) -> Value {
    let map: BTreeMap<&'static str, Value> = values
        .iter()
        .map(|(var, value)| (var.name(), Value::from(*value)))
        .collect();
    Value::from_object(map)
}

/// A template error's description and line, without minijinja's debug dump.
fn describe(error: &minijinja::Error) -> String {
    let what = error.detail().map_or_else(
        || error.kind().to_string(),
        |detail| format!("{}: {detail}", error.kind()),
    );
    match error.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

/// Appends `value` to `out` with `&`, `<`, `>`, `"` and `'` escaped.
fn escape_html(value: &str, out: &mut String) {
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
