use std::path::PathBuf;

use super::template::{Kind, Part, TemplateSet, Var, file_name, percent_encode};
use super::*;
use mailparse::MailHeaderMap as _;

const PASSWORD: &str = "s3cr3t-smtp-password";
const TOKEN: &str = "tok_EN-0123456789abcdefXYZ";

fn settings(smtp_url: &str) -> MailSettings {
    MailSettings {
        smtp_url: Some(smtp_url.to_owned()),
        from: "nanoStream Cloud <noreply@example.com>".into(),
        public_url: "https://dashboard.example.com/".into(),
        templates_dir: None,
    }
}

fn mailer() -> Mailer {
    Mailer::from_settings(&settings("smtp://127.0.0.1:2525"))
        .expect("mailer")
        .expect("mail on")
}

/// A new empty directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mail-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn with_templates(files: &[(&str, &str)]) -> Result<Option<Mailer>, MailError> {
    let dir = temp_dir("templates");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write template");
    }
    let mut settings = settings("smtp://127.0.0.1:2525");
    settings.templates_dir = Some(dir.clone());
    let result = Mailer::from_settings(&settings);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn rendered(mailer: &Mailer, kind: Kind, values: &[(Var, &str)]) -> (String, String, String) {
    let templates = &mailer.inner.templates;
    let render = |part| templates.render(kind, part, values).expect("rendered");
    (
        render(Part::Subject),
        render(Part::Text),
        render(Part::Html),
    )
}

#[test]
fn mail_is_off_without_an_smtp_url() {
    let mut settings = settings("unused");
    settings.smtp_url = None;
    assert!(
        Mailer::from_settings(&settings)
            .expect("no error")
            .is_none()
    );
}

#[test]
fn the_password_reset_mail_carries_the_link_and_the_validity() {
    let mailer = mailer();
    let link = mailer.link("reset-password", TOKEN);
    assert_eq!(
        link,
        format!("https://dashboard.example.com/reset-password#token={TOKEN}")
    );
    let (subject, text, html) = rendered(
        &mailer,
        Kind::PasswordReset,
        &[
            (Var::Link, &link),
            (Var::ValidMinutes, "30"),
            (Var::Email, "ann@example.com"),
        ],
    );
    assert_eq!(subject, "Reset your password");
    assert!(text.contains(&link), "{text}");
    assert!(text.contains("30 minutes"), "{text}");
    assert!(text.contains("ann@example.com"), "{text}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    assert!(!text.contains("{{") && !html.contains("{{"));
}

#[test]
fn the_invite_mail_names_organisation_role_and_expiry() {
    let mailer = mailer();
    let link = mailer.link("accept-invite", TOKEN);
    assert_eq!(
        link,
        format!("https://dashboard.example.com/accept-invite#token={TOKEN}")
    );
    let (subject, text, html) = rendered(
        &mailer,
        Kind::Invite,
        &[
            (Var::Link, &link),
            (Var::Organisation, "Acme"),
            (Var::Role, "nanoAdmin"),
            (Var::ExpiresAt, "2030-01-02T03:04:05Z"),
            (Var::Email, "bob@example.com"),
        ],
    );
    assert_eq!(subject, "You are invited to join Acme");
    for part in [&text, &html] {
        assert!(part.contains(&link), "{part}");
        assert!(part.contains("nanoAdmin"), "{part}");
        assert!(part.contains("2030-01-02T03:04:05Z"), "{part}");
        assert!(part.contains("bob@example.com"), "{part}");
    }
}

#[test]
fn values_are_html_escaped_in_the_html_part_only() {
    let mailer = mailer();
    let organisation = r#"<b>Tom & Jerry's "Cats"</b>"#;
    let (subject, text, html) = rendered(
        &mailer,
        Kind::Invite,
        &[
            (Var::Link, "https://x.example/accept-invite?token=a&b"),
            (Var::Organisation, organisation),
            (Var::Role, "member"),
            (Var::ExpiresAt, "soon"),
            (Var::Email, "c@example.com"),
        ],
    );
    assert_eq!(subject, format!("You are invited to join {organisation}"));
    assert!(text.contains(organisation), "{text}");
    assert!(!html.contains(organisation), "{html}");
    assert!(
        html.contains("&lt;b&gt;Tom &amp; Jerry&#39;s &quot;Cats&quot;&lt;/b&gt;"),
        "{html}"
    );
    assert!(
        html.contains("href=\"https://x.example/accept-invite?token=a&amp;b\""),
        "{html}"
    );
}

#[test]
fn organisation_and_email_are_auto_escaped_in_html_templates_only() {
    let organisation = "<script>alert('x')</script> & Co";
    let email = "o'brien&<x>@example.com";
    let custom = with_templates(&[
        ("invite.txt", "{{ organisation }} {{ email }} {{ link }}"),
        (
            "invite.html",
            "<p>{{ organisation }}</p><p>{{ email }}</p>{{ link }}",
        ),
    ])
    .expect("mailer")
    .expect("mail on");
    let (_, text, html) = rendered(
        &custom,
        Kind::Invite,
        &[
            (Var::Link, "L"),
            (Var::Organisation, organisation),
            (Var::Role, "member"),
            (Var::ExpiresAt, "soon"),
            (Var::Email, email),
        ],
    );
    assert_eq!(text, format!("{organisation} {email} L"));
    assert_eq!(
        html,
        "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co</p>\
         <p>o&#39;brien&amp;&lt;x&gt;@example.com</p>L"
    );
    // The built-in HTML templates too, for both values.
    let (_, _, html) = rendered(
        &mailer(),
        Kind::Invite,
        &[
            (Var::Link, "L"),
            (Var::Organisation, organisation),
            (Var::Role, "member"),
            (Var::ExpiresAt, "soon"),
            (Var::Email, email),
        ],
    );
    assert!(
        !html.contains("<script>") && !html.contains("<x>"),
        "{html}"
    );
    assert!(
        html.contains("o&#39;brien&amp;&lt;x&gt;@example.com"),
        "{html}"
    );
}

#[test]
fn a_variable_without_a_value_is_an_error_not_empty() {
    let mailer = mailer();
    for part in [Part::Text, Part::Html] {
        let error = mailer
            .inner
            .templates
            .render(Kind::Invite, part, &[(Var::Link, "L")])
            .expect_err("no organisation, role, expiry or email");
        assert!(matches!(error, MailError::Template { .. }), "{error:?}");
        assert!(error.to_string().contains("undefined"), "{error}");
    }
}

#[test]
fn templates_keep_their_final_line_break() {
    let mailer = with_templates(&[("password_reset.txt", "Go to {{ link }}\n")])
        .expect("mailer")
        .expect("mail on");
    let (_, text, html) = rendered(
        &mailer,
        Kind::PasswordReset,
        &[
            (Var::Link, "L"),
            (Var::ValidMinutes, "5"),
            (Var::Email, "c@example.com"),
        ],
    );
    assert_eq!(text, "Go to L\n");
    assert!(html.ends_with("</html>\n"), "{html}");
}

#[test]
fn tokens_are_percent_encoded_in_links() {
    assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
    assert_eq!(
        percent_encode("a b/c?d=e&f+é"),
        "a%20b%2Fc%3Fd%3De%26f%2B%C3%A9"
    );
    let link = mailer().link("reset-password", "a b");
    assert!(link.ends_with("/reset-password#token=a%20b"), "{link}");
}

#[test]
fn a_templates_directory_replaces_only_the_files_it_has() {
    let mailer = with_templates(&[
        ("invite.subject.txt", "  Join {{ organisation }} now\n\n"),
        (
            "password_reset.txt",
            "Go to {{link}} ({{valid_minutes}} min)",
        ),
    ])
    .expect("mailer")
    .expect("mail on");
    let (subject, text, html) = rendered(
        &mailer,
        Kind::Invite,
        &[
            (Var::Organisation, "Acme"),
            (Var::Link, "L"),
            (Var::Role, "member"),
            (Var::ExpiresAt, "soon"),
            (Var::Email, "c@example.com"),
        ],
    );
    assert_eq!(subject, "Join Acme now");
    assert!(text.contains("You are invited to join Acme"), "{text}");
    assert!(html.contains("<!DOCTYPE html>"), "{html}");
    let (subject, text, _) = rendered(
        &mailer,
        Kind::PasswordReset,
        &[
            (Var::Link, "L"),
            (Var::ValidMinutes, "5"),
            (Var::Email, "c@example.com"),
        ],
    );
    assert_eq!(subject, "Reset your password");
    assert_eq!(text, "Go to L (5 min)");
}

#[test]
fn unknown_placeholders_are_rejected_when_the_mailer_is_built() {
    for (file, source, expected) in [
        ("invite.html", "<p>{{token}}</p>", "{{token}}"),
        // A placeholder of another kind of mail is unknown here.
        ("password_reset.txt", "{{organisation}}", "{{organisation}}"),
        (
            "invite.subject.txt",
            "Join {{organisation}",
            "expected end of variable block",
        ),
        ("invite.subject.txt", "Join\n{{organisation}}", "one line"),
        ("password_reset.subject.txt", " \n", "empty"),
        // Checked where it is used, not only where the run goes.
        (
            "invite.txt",
            "{% if false %}{{ token }}{% endif %}{{ link }}",
            "{{token}}",
        ),
        // Strict: an attribute a string does not have is an error.
        ("invite.html", "{{ link.host }}", "undefined"),
        ("invite.subject.txt", "Join {{ \"\\n\" }}", "one line"),
    ] {
        let error = with_templates(&[(file, source)]).expect_err(file);
        let shown = error.to_string();
        assert!(matches!(error, MailError::Template { .. }), "{error:?}");
        assert!(shown.contains(file), "{shown}");
        assert!(shown.contains(expected), "{shown}");
    }
}

#[test]
fn every_built_in_template_parses_and_uses_the_link() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates/mail");
    let templates = TemplateSet::load(Some(&dir)).expect("the files in templates/mail");
    for kind in [Kind::PasswordReset, Kind::Invite] {
        for part in [Part::Subject, Part::Text, Part::Html] {
            let name = file_name(kind, part);
            assert!(dir.join(&name).is_file(), "{name}");
            if part != Part::Subject {
                assert!(templates.uses(kind, part).contains(&Var::Link), "{name}");
            }
        }
    }
}

#[test]
fn a_missing_templates_directory_is_an_error() {
    let dir = temp_dir("gone");
    let mut settings = settings("smtp://127.0.0.1:2525");
    settings.templates_dir = Some(dir.join("missing"));
    let error = Mailer::from_settings(&settings).expect_err("missing dir");
    let _ = std::fs::remove_dir_all(dir);
    assert!(matches!(error, MailError::TemplatesDir { .. }), "{error:?}");
}

#[test]
fn a_line_break_cannot_reach_the_subject() {
    let mailer = mailer();
    let error = mailer
        .compose(
            Kind::Invite,
            "ann@example.com",
            &[
                (Var::Link, "L"),
                (Var::Organisation, "Acme\r\nBcc: all@example.com"),
                (Var::Role, "member"),
                (Var::ExpiresAt, "soon"),
            ],
        )
        .expect_err("header injection");
    assert!(
        matches!(
            error,
            MailError::Subject {
                field: "organisation"
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_line_break_the_subject_template_writes_cannot_reach_the_subject() {
    // Only for one organisation, so the check at start does not see it.
    let mailer = with_templates(&[(
        "invite.subject.txt",
        r#"Join {{ organisation }}{% if organisation == "Evil" %}{{ "\r\nBcc: all@example.com" }}{% endif %}"#,
    )])
    .expect("mailer")
    .expect("mail on");
    let error = mailer
        .compose(
            Kind::Invite,
            "ann@example.com",
            &[
                (Var::Link, "L"),
                (Var::Organisation, "Evil"),
                (Var::Role, "member"),
                (Var::ExpiresAt, "soon"),
            ],
        )
        .expect_err("header injection");
    assert!(matches!(error, MailError::Template { .. }), "{error:?}");
    assert!(error.to_string().contains("line break"), "{error}");
}

#[test]
fn messages_are_multipart_alternative_with_headers_right() {
    let mailer = mailer();
    let message = mailer
        .compose(
            Kind::PasswordReset,
            " ann@example.com ",
            &[
                (Var::Link, "https://x.example/r?token=t"),
                (Var::ValidMinutes, "30"),
            ],
        )
        .expect("message");
    let raw = String::from_utf8(message.formatted()).expect("utf-8");
    assert!(
        raw.contains("From: \"nanoStream Cloud\" <noreply@example.com>\r\n"),
        "{raw}"
    );
    assert!(raw.contains("To: ann@example.com\r\n"), "{raw}");
    assert!(raw.contains("Subject: Reset your password\r\n"), "{raw}");
    assert!(raw.contains("Message-ID: <"), "{raw}");
    assert!(
        raw.contains("Content-Type: multipart/alternative;"),
        "{raw}"
    );
    assert!(
        raw.contains("Content-Type: text/plain; charset=utf-8"),
        "{raw}"
    );
    assert!(
        raw.contains("Content-Type: text/html; charset=utf-8"),
        "{raw}"
    );
    assert_eq!(
        raw.matches("Content-Transfer-Encoding: quoted-printable")
            .count(),
        2,
        "{raw}"
    );
    let envelope = message.envelope();
    assert_eq!(envelope.to().len(), 1);
    assert_eq!(envelope.to()[0].to_string(), "ann@example.com");
}

#[test]
fn bad_recipients_are_rejected() {
    for to in ["", "not an address", "a@b@c", "Ann <ann@example.com>"] {
        let error = mailer()
            .compose(Kind::PasswordReset, to, &[(Var::Link, "L")])
            .expect_err(to);
        assert!(matches!(error, MailError::Recipient), "{to}: {error:?}");
    }
}

#[test]
fn the_public_url_is_checked_and_loses_its_trailing_slash() {
    for (given, expected) in [
        ("https://dash.example.com", "https://dash.example.com"),
        ("https://dash.example.com///", "https://dash.example.com"),
        (
            "HTTP://dash.example.com:8080/app/",
            "http://dash.example.com:8080/app",
        ),
    ] {
        assert_eq!(normalise_public_url(given).expect(given), expected);
    }
    for bad in [
        "",
        "dash.example.com",
        "ftp://dash.example.com",
        "https://",
        "https:///path",
        "https://user:pw@dash.example.com",
        "https://dash.example.com/?a=b",
        "https://dash.example.com/#top",
        "https://dash example.com",
    ] {
        let error = normalise_public_url(bad).expect_err(bad);
        assert!(matches!(error, MailError::PublicUrl), "{bad}");
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}

#[test]
fn a_bad_sender_is_an_error() {
    let mut settings = settings("smtp://127.0.0.1:2525");
    settings.from = "not an address".into();
    let error = Mailer::from_settings(&settings).expect_err("bad from");
    assert!(matches!(error, MailError::From { .. }), "{error:?}");
}

#[test]
fn smtp_urls_are_checked_and_their_password_never_shown() {
    for url in [
        format!("ftp://user:{PASSWORD}@mail.example.com"),
        format!("smtp://user:{PASSWORD}@mail.example.com:notaport"),
        format!("smtp://user:{PASSWORD}@mail.example.com?tls=sometimes"),
        format!("smtps://user:{PASSWORD}/x#y?z@mail.example.com"),
        format!("smtps://user:{PASSWORD}@"),
        "smtp://user@mail.example.com".to_owned(),
        "not a url".to_owned(),
    ] {
        let error = Mailer::from_settings(&settings(&url)).expect_err(&url);
        assert!(matches!(error, MailError::SmtpUrl { .. }), "{error:?}");
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains(PASSWORD), "{shown}");
        }
    }
}

#[test]
fn smtp_urls_of_every_kind_are_accepted() {
    for url in [
        "smtp://127.0.0.1:2525",
        "smtp://mail.example.com",
        "smtp://mail.example.com:587?tls=required",
        "smtp://mail.example.com:587?tls=opportunistic",
        "smtps://user:pass@mail.example.com",
        "smtps://user%40example.com:p%40ss@mail.example.com:465",
    ] {
        assert!(
            Mailer::from_settings(&settings(url)).expect(url).is_some(),
            "{url}"
        );
    }
}

#[test]
fn debug_of_the_settings_and_the_mailer_hides_the_password() {
    let settings = settings(&format!("smtps://user:{PASSWORD}@mail.example.com:465"));
    let shown = format!("{settings:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(
        shown.contains("smtps://redacted@mail.example.com:465"),
        "{shown}"
    );

    let mailer = Mailer::from_settings(&settings)
        .expect("mailer")
        .expect("mail on");
    let shown = format!("{mailer:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!shown.contains("user"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    assert!(shown.contains("mail.example.com:465"), "{shown}");
}

#[test]
fn redaction_of_smtp_urls() {
    assert_eq!(redact_url("smtp://h:25"), "smtp://h:25");
    assert_eq!(redact_url("smtps://s:s@s:465"), "smtps://redacted@s:465");
    assert_eq!(redact_url("smtps://a:b@c@h:465"), "smtps://redacted@h:465");
    assert_eq!(redact_url("smtps://a:b/c?d#e@h"), "smtps://redacted@h");
    assert_eq!(redact_url("a:b@h"), "redacted@h");
    assert_eq!(url_password("smtps://a:b@c@h"), Some("b@c"));
    assert_eq!(url_password("smtps://a:b/c@h"), Some("b/c"));
    assert_eq!(url_password("smtps://a@h"), None);
    assert_eq!(url_password("smtp://h:25"), None);
}

#[tokio::test]
async fn a_failed_delivery_shows_neither_token_nor_link_nor_password() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let mut settings = settings(&format!("smtp://user:{PASSWORD}@127.0.0.1:{port}"));
    settings.public_url = "https://dashboard.example.com".into();
    let mailer = Mailer::from_settings(&settings)
        .expect("mailer")
        .expect("mail on");
    let error = mailer
        .send_password_reset("ann@example.com", TOKEN, 30)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, MailError::Smtp(_)), "{error:?}");
    let error_invite = mailer
        .send_invite("ann@example.com", TOKEN, "Acme", "member", "soon")
        .await
        .expect_err("nothing listens");
    for shown in [
        error.to_string(),
        format!("{error:?}"),
        error_invite.to_string(),
        format!("{error_invite:?}"),
    ] {
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains("reset-password"), "{shown}");
        assert!(!shown.contains("accept-invite"), "{shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

/// The subject of an invite to `organisation`, as the message carries it:
/// the raw (folded) header and what a real decoder reads from it.
fn invite_subject(organisation: &str) -> (String, String, String) {
    let message = mailer()
        .compose(
            Kind::Invite,
            "ann@example.com",
            &[
                (Var::Link, "https://x.example/accept-invite#token=t"),
                (Var::Organisation, organisation),
                (Var::Role, "nanoUser"),
                (Var::ExpiresAt, "2030-01-01T00:00:00Z"),
            ],
        )
        .expect("message");
    let raw = String::from_utf8(message.formatted()).expect("utf-8");
    let (headers, _) = mailparse::parse_headers(raw.as_bytes()).expect("headers");
    let decoded = headers
        .get_first_value("Subject")
        .expect("a Subject header");
    let folded: String = raw
        .split("\r\n")
        .skip_while(|line| !line.starts_with("Subject:"))
        .enumerate()
        .take_while(|(i, line)| *i == 0 || line.starts_with(' '))
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    (raw, folded, decoded)
}

#[test]
fn an_encoded_word_in_a_value_is_sent_as_literal_text() {
    for organisation in [
        "=?utf-8?q?Acme=0D=0ABcc:_victim@evil.example?=",
        "=?UTF-8?B?QWNtZQ0KQmNjOiB4QHkueg==?=",
        "Bücher =?utf-8?q?x?= Söhne",
        "=?",
        "Grüße aus Köln, ein sehr langer Name, der über mehrere Zeilen gefaltet wird ✓",
    ] {
        let (raw, folded, decoded) = invite_subject(organisation);
        assert_eq!(
            decoded,
            format!("You are invited to join {organisation}"),
            "{raw}"
        );
        assert!(!raw.to_ascii_lowercase().contains("\r\nbcc:"), "{raw}");
        for line in folded.lines() {
            assert!(line.len() <= 78, "{line:?}");
            assert!(line.is_ascii(), "{line:?}");
            // Nothing outside the encoded words.
            for word in line.trim_start_matches("Subject:").split_whitespace() {
                assert!(
                    word.starts_with("=?utf-8?b?") && word.ends_with("?=") && word.len() <= 75,
                    "{word:?} in {folded}"
                );
            }
        }
    }
    // Plain ASCII stays readable as it is.
    let (_, folded, decoded) = invite_subject("Acme & Co. (EU) 100% = fine?");
    assert_eq!(
        folded,
        "Subject: You are invited to join Acme & Co. (EU) 100% = fine?\n"
    );
    assert_eq!(
        decoded,
        "You are invited to join Acme & Co. (EU) 100% = fine?"
    );
}

#[test]
fn the_message_id_is_random_at_the_senders_domain() {
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let (raw, _, _) = invite_subject("Acme");
            let (headers, _) = mailparse::parse_headers(raw.as_bytes()).expect("headers");
            headers.get_first_value("Message-ID").expect("a Message-ID")
        })
        .collect();
    for id in &ids {
        let local = id
            .strip_prefix('<')
            .and_then(|id| id.strip_suffix("@example.com>"))
            .unwrap_or_else(|| panic!("{id}"));
        assert!(uuid::Uuid::parse_str(local).is_ok(), "{id}");
    }
    assert_ne!(ids[0], ids[1]);
}
