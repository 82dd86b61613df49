//! Property tests (proptest; `cargo fuzz` needs a nightly toolchain): the
//! request validation and token parsing code never panics on arbitrary
//! input, and what it accepts has the promised form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization as _;
use uuid::Uuid;

use crate::api::convert::{optional_duration, optional_time};
use crate::api::screen::{RequestMessages, screen};
use crate::auth::authenticator::credential_from_headers;
use crate::auth::tokens::{AccessTokens, TokenClaims, TokenSettings};
use crate::domain::audit::AuditFilter;
use crate::domain::email::{Email, EmailPrefix};
use crate::domain::input::{MAX_DURATION_SECONDS, MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS};
use crate::domain::paging::PageToken;
use crate::domain::playback::{
    Restrictions, Scope, check_ceiling, lifetime_ceiling, validity_window,
};
use crate::domain::user::{optional_id, parse_id, validate_organisation_name, validate_password};

fn tokens() -> AccessTokens {
    AccessTokens::new(
        b"a property-test key of at least 32 bytes",
        TokenSettings {
            issuer: "usermgmt".into(),
            audience: "usermgmt".into(),
            lifetime: std::time::Duration::from_secs(600),
        },
        1 << 20,
    )
    .expect("tokens")
}

/// Text that looks like a JWT: three base64url parts of arbitrary bytes,
/// sometimes JSON.
fn jwt_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        any::<String>().prop_map(|s| URL_SAFE_NO_PAD.encode(s)),
        Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)),
        Just(URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"../../etc/passwd"}"#)),
        any::<String>(),
    ];
    (part.clone(), part.clone(), part).prop_map(|(a, b, c)| format!("{a}.{b}.{c}"))
}

/// A timestamp or duration field of a request: the RPC's path, the field's
/// path from the request message, and whether it is a duration.
#[derive(Debug, Clone)]
struct TimeField {
    rpc: String,
    path: Vec<String>,
    duration: bool,
}

impl TimeField {
    /// `Message.field.subfield`, as [`consume`] knows it.
    fn name(&self, messages: &RequestMessages) -> String {
        let request = messages.of_path(&self.rpc).expect("an RPC");
        format!("{}.{}", request.name(), self.path.join("."))
    }
}

/// The contract's request messages, decoded once for all cases.
fn messages() -> &'static RequestMessages {
    static MESSAGES: std::sync::LazyLock<RequestMessages> =
        std::sync::LazyLock::new(|| RequestMessages::of_contract().expect("descriptors"));
    &MESSAGES
}

/// Every timestamp and duration field of every request of the contract, at
/// any depth.
fn time_fields() -> &'static [TimeField] {
    static FIELDS: std::sync::LazyLock<Vec<TimeField>> = std::sync::LazyLock::new(find_time_fields);
    &FIELDS
}

fn find_time_fields() -> Vec<TimeField> {
    fn visit(
        message: &prost_reflect::MessageDescriptor,
        path: &mut Vec<String>,
        rpc: &str,
        found: &mut Vec<TimeField>,
    ) {
        for field in message.fields() {
            let Some(inner) = field.kind().as_message().cloned() else {
                continue;
            };
            path.push(field.name().to_owned());
            match inner.full_name() {
                "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
                    found.push(TimeField {
                        rpc: rpc.to_owned(),
                        path: path.clone(),
                        duration: inner.full_name() == "google.protobuf.Duration",
                    });
                }
                _ if path.len() < 8 => visit(&inner, path, rpc, found),
                _ => {}
            }
            path.pop();
        }
    }
    let messages = messages();
    let mut found = Vec::new();
    for rpc in crate::proto::rpc_paths().expect("paths") {
        let request = messages.of_path(&rpc).expect("an RPC");
        visit(request, &mut Vec::new(), &rpc, &mut found);
    }
    found
}

/// `field` of a request set to `seconds` and `nanos`, encoded.
fn encoded_with(
    messages: &RequestMessages,
    field: &TimeField,
    seconds: i64,
    nanos: i32,
) -> Vec<u8> {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};
    fn set(message: &mut DynamicMessage, path: &[String], value: Value) {
        let descriptor = message.descriptor();
        let field = descriptor
            .get_field_by_name(&path[0])
            .expect("a field of the message");
        if path.len() == 1 {
            message.set_field(&field, value);
        } else if let Value::Message(inner) = message.get_field_mut(&field) {
            set(inner, &path[1..], value);
        }
    }
    let request = messages.of_path(&field.rpc).expect("an RPC").clone();
    let name = if field.duration {
        "google.protobuf.Duration"
    } else {
        "google.protobuf.Timestamp"
    };
    let time = request
        .parent_pool()
        .get_message_by_name(name)
        .expect("a well-known type");
    let mut value = DynamicMessage::new(time);
    value.set_field_by_name("seconds", Value::I64(seconds));
    value.set_field_by_name("nanos", Value::I32(nanos));
    let mut message = DynamicMessage::new(request);
    set(&mut message, &field.path, Value::Message(value));
    message.encode_to_vec()
}

/// What the handler of each timestamp and duration field does with a value
/// the input rules let through: its conversion and arithmetic, which must
/// not fail other than with INVALID_ARGUMENT. A field of the contract that
/// is not listed here fails the property.
fn consume(name: &str, seconds: i64, nanos: i32) {
    let time = || optional_time("t", Some(prost_types::Timestamp { seconds, nanos }));
    let now = chrono::Utc::now();
    let hour = std::time::Duration::from_secs(3600);
    match name {
        "IssuePlaybackTokenRequest.nbf" => {
            let nbf = time().expect("accepted by the rules");
            for revocable in [false, true] {
                let _ = validity_window(now, nbf, None, revocable, hour);
                let _ = validity_window(now, nbf, Some(now), revocable, hour);
            }
        }
        "IssuePlaybackTokenRequest.exp" => {
            let exp = time().expect("accepted by the rules");
            for revocable in [false, true] {
                let _ = validity_window(now, None, exp, revocable, hour);
                let _ = validity_window(now, Some(now), exp, revocable, hour);
            }
        }
        "ListAuditEventsRequest.start_time" | "ListAuditEventsRequest.end_time" => {
            let at = time().expect("accepted by the rules");
            let _ = AuditFilter {
                start_time: at,
                end_time: at,
                ..Default::default()
            }
            .fingerprint();
        }
        "CreateInviteRequest.ttl" => {
            let ttl = optional_duration("ttl", Some(prost_types::Duration { seconds, nanos }))
                .and_then(crate::domain::invite::requested_ttl);
            // What UserService.CreateInvite then adds to the time now.
            if let Ok(Some(ttl)) = ttl {
                let _ = now + ttl;
            }
        }
        "UpdateOrganisationRequest.organisation.max_non_revocable_lifetime" => {
            // What issuing then holds a token's `exp` to.
            if let Ok(ceiling) = lifetime_ceiling("t", seconds, nanos) {
                for revocable in [false, true] {
                    let _ = check_ceiling(now, now, revocable, ceiling);
                }
            }
        }
        "CreateApiTokenRequest.expires_at" => {
            let at = time().expect("accepted by the rules");
            let _ = crate::domain::api_token::validate_expiry("expires_at", at, now);
        }
        "WatchChangesRequest.heartbeat_interval" => {
            // What a watch then adds to the time of its last message, once
            // the interval is within the feed's bounds.
            let settings = crate::app::changes::FeedSettings::default();
            let asked = optional_duration(
                "heartbeat_interval",
                Some(prost_types::Duration { seconds, nanos }),
            );
            if let Ok(Some(interval)) = asked
                && (settings.heartbeat_min..=settings.heartbeat_max).contains(&interval)
            {
                let _ = tokio::time::Instant::now() + interval;
            }
        }
        // Output only: UpdateOrganisation ignores them.
        "UpdateOrganisationRequest.organisation.created_at"
        | "UpdateOrganisationRequest.organisation.api_key_rotated_at" => {}
        other => panic!(
            "{other}: a timestamp or duration of a request that the property tests do not know; \
             add what its handler does with it to `consume`"
        ),
    }
}

/// Seconds near every edge the rules and chrono have, and anything else.
fn seconds() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        (MIN_TIMESTAMP_SECONDS - 2)..(MIN_TIMESTAMP_SECONDS + 2),
        (MAX_TIMESTAMP_SECONDS - 2)..(MAX_TIMESTAMP_SECONDS + 2),
        (MAX_DURATION_SECONDS - 2)..(MAX_DURATION_SECONDS + 2),
        (-MAX_DURATION_SECONDS - 2)..(-MAX_DURATION_SECONDS + 2),
        -100_000_000_000i64..100_000_000_000,
        Just(8_210_266_876_799i64),
        Just(i64::MIN),
        Just(i64::MAX),
    ]
}

fn nanos() -> impl Strategy<Value = i32> {
    prop_oneof![
        any::<i32>(),
        -2i32..2,
        999_999_998i32..1_000_000_002,
        -1_000_000_001i32..-999_999_998,
    ]
}

#[test]
fn every_time_field_of_the_contract_is_known_to_the_properties() {
    let messages = messages();
    let fields = time_fields();
    assert!(fields.len() >= 5, "{fields:?}");
    for field in fields {
        // Panics for a field `consume` does not list.
        consume(&field.name(messages), 0, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn email_parse_never_panics_and_accepts_one_normal_form(raw in any::<String>()) {
        if let Ok(email) = Email::parse("email", &raw) {
            let text = email.as_str();
            prop_assert!(!text.is_empty() && text.len() <= 254);
            prop_assert!(!text.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert_eq!(text, text.to_lowercase());
            prop_assert_eq!(text.nfc().collect::<String>(), text);
            // Normalising twice changes nothing.
            let again = Email::parse("email", text).expect("a normal form parses");
            prop_assert_eq!(again.as_str(), text);
        }
    }

    #[test]
    fn email_case_and_space_do_not_matter(local in "[a-zA-Z0-9._%+-]{1,20}", domain in "[a-zA-Z0-9]{1,20}") {
        let raw = format!("{local}@{domain}.example");
        let upper = format!("  {}  ", raw.to_uppercase());
        prop_assert_eq!(
            Email::parse("email", &raw).map(Email::into_string).ok(),
            Email::parse("email", &upper).map(Email::into_string).ok()
        );
    }

    #[test]
    fn ids_and_names_never_panic(raw in any::<String>()) {
        if let Ok(id) = parse_id("id", &raw) {
            prop_assert_eq!(parse_id("id", &id.to_string()).ok(), Some(id));
        }
        let _ = optional_id("id", &raw);
        let _ = validate_password("password", &raw);
        if let Ok(name) = validate_organisation_name("name", &raw) {
            prop_assert!(name.chars().count() <= 200);
        }
    }

    #[test]
    fn page_tokens_never_panic_and_round_trip(raw in any::<String>(), filter in "[a-z=,]{0,40}", after in any::<u128>()) {
        let _ = PageToken::decode(&raw, &filter);
        let _ = PageToken::decode(&URL_SAFE_NO_PAD.encode(raw.as_bytes()), &filter);
        let token = PageToken { filter: filter.clone(), after: Uuid::from_u128(after) };
        prop_assert_eq!(PageToken::decode(&token.encode(), &filter).ok(), Some(Some(Uuid::from_u128(after))));
        // A token of another query is refused.
        let other = format!("{filter}x");
        prop_assert!(PageToken::decode(&token.encode(), &other).is_err());
    }

    #[test]
    fn playback_scopes_and_restrictions_never_panic(
        names in proptest::collection::vec(any::<String>(), 0..25),
        group in any::<String>(),
        fields in (any::<String>(), any::<String>(), any::<String>(), any::<String>()),
        stream in any::<String>(),
    ) {
        if let Ok(scope) = Scope::streams("scope", names) {
            let _ = scope.allows(&stream, &group);
        }
        if let Ok(scope) = Scope::group("scope", group.clone()) {
            let _ = scope.allows(&stream, &group);
        }
        let (domain, ip, tag, user) = fields;
        let _ = Restrictions::parse(&domain, &ip, &tag, &user);
        let _ = crate::auth::playback::read_header(&stream);
    }

    #[test]
    fn access_token_verification_refuses_what_it_did_not_issue(raw in any::<String>(), like in jwt_like()) {
        let tokens = tokens();
        prop_assert!(tokens.verify(&raw).is_err());
        prop_assert!(tokens.verify(&like).is_err());
        let _ = crate::auth::playback::read_header(&like);
    }

    #[test]
    fn a_changed_character_never_yields_other_claims(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.=-]") {
        let tokens = tokens();
        let claims = TokenClaims {
            user_id: Uuid::now_v7(),
            organisation_id: Uuid::now_v7(),
            token_key: Uuid::new_v4(),
            session_id: Uuid::now_v7(),
        };
        let issued = tokens.issue(claims).expect("issue").token;
        let mut chars: Vec<char> = issued.chars().collect();
        let at = position.index(chars.len());
        chars[at] = replacement.chars().next().expect("one char");
        let changed: String = chars.into_iter().collect();
        // Either refused, or (a base64 variant of the same bytes) the very
        // same claims: never a forgery.
        if let Ok(verified) = tokens.verify(&changed) {
            prop_assert_eq!(verified, claims);
        }
    }

    #[test]
    fn credentials_are_read_from_any_header_values_without_panic(
        values in proptest::collection::vec((0usize..3, proptest::collection::vec(any::<u8>(), 0..80)), 0..4)
    ) {
        let names = ["authorization", "x-bintu-token", "x-bintu-apikey"];
        let mut headers = http::HeaderMap::new();
        for (name, bytes) in values {
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                headers.append(names[name], value);
            }
        }
        let _ = credential_from_headers(&headers);
    }

    #[test]
    fn every_timestamp_and_duration_of_a_request_is_range_checked_before_any_arithmetic(
        index in any::<prop::sample::Index>(),
        seconds in seconds(),
        nanos in nanos(),
    ) {
        let messages = messages();
        let fields = time_fields();
        let field = &fields[index.index(fields.len())];
        let name = field.name(messages);
        let encoded = encoded_with(messages, field, seconds, nanos);
        let descriptor = messages.of_path(&field.rpc).expect("an RPC");
        let in_range = if field.duration {
            seconds.unsigned_abs() <= MAX_DURATION_SECONDS.unsigned_abs()
                && nanos.unsigned_abs() < 1_000_000_000
                && !(seconds > 0 && nanos < 0 || seconds < 0 && nanos > 0)
        } else {
            (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds)
                && (0..1_000_000_000).contains(&nanos)
        };
        match screen(descriptor, &encoded) {
            Ok(()) => {
                prop_assert!(in_range, "{name} = {seconds}.{nanos} was let through");
                consume(&name, seconds, nanos);
            }
            Err(crate::domain::DomainError::InvalidArgument(violations)) => {
                prop_assert!(!in_range, "{name} = {seconds}.{nanos} was refused");
                prop_assert_eq!(violations.len(), 1);
                prop_assert_eq!(&violations[0].field, &field.path.join("."));
            }
            Err(other) => prop_assert!(false, "{name}: {other:?}"),
        }
    }
}

/// Characters of generated emails that exercise the prefix search: ASCII,
/// Greek capitals and small letters with both sigmas, composed and
/// decomposed accents of several combining classes (canonical order moves
/// them), letters whose capital decomposes (ǰ, ΐ) or whose small letter
/// does (İ), Hangul syllables and jamo, and the last code point.
fn email_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select(&[
            'a', 'B', 'e', 'E', 'i', 'I', 'j', 'J', 'o', 'z', '.', '-', '_', '%', 'Σ', 'σ', 'ς',
            'Α', 'α', 'ι', 'ΐ', '\u{301}', '\u{323}', '\u{308}', '\u{30C}', '\u{345}',
            '\u{334}', 'é', 'É', 'ǰ', 'İ', 'ß', '가', '각', '\u{1100}', '\u{1161}', '\u{11A8}',
            '\u{0B47}', '\u{0B3E}', '\u{10FFFF}', 'ﬀ', 'Ω', '\u{2126}',
        ][..]),
        1 => any::<char>(),
    ]
}

/// `raw` typed with each character in upper, lower or its own case.
fn retyped(raw: &str, cases: &[u8]) -> String {
    raw.chars()
        .zip(cases.iter().cycle())
        .map(|(c, case)| match case % 3 {
            0 => c.to_uppercase().collect::<String>(),
            1 => c.to_lowercase().collect::<String>(),
            _ => c.to_string(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The search's promise: for an email typed in any case that is still
    /// the same email, every prefix of what was typed (not splitting a
    /// letter from the accents typed after it) finds the stored email, and
    /// the stored email lies in the prefix's range of the index.
    #[test]
    fn every_prefix_of_an_email_finds_it(
        local in proptest::collection::vec(email_char(), 1..12),
        domain in proptest::sample::select(&["x.example.com", "Ü.example.com", "σ.example"][..]),
        cases in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        use unicode_normalization::char::canonical_combining_class;
        let raw = format!("{}@{domain}", local.iter().collect::<String>());
        let Ok(stored) = Email::parse("email", &raw).map(Email::into_string) else {
            return Ok(());
        };
        let typed = retyped(&raw, &cases);
        if Email::parse("email", &typed).map(Email::into_string).ok().as_ref() != Some(&stored) {
            return Ok(());
        }
        let chars: Vec<char> = typed.trim().chars().collect();
        for end in 1..=chars.len() {
            let splits_a_letter = chars.get(end).is_some_and(|next| {
                canonical_combining_class(*next) != 0
                    && canonical_combining_class(chars[end - 1]) == 0
            });
            if splits_a_letter {
                continue;
            }
            let prefix: String = chars[..end].iter().collect();
            let Ok(Some(search)) = EmailPrefix::parse("email_prefix", &prefix) else {
                // Only white space is empty, and none is in an email.
                return Err(TestCaseError::fail(format!("{prefix:?} refused")));
            };
            prop_assert!(search.matches(&stored), "{prefix:?} does not match {stored:?}");
            prop_assert!(
                search.in_ranges(&stored),
                "{stored:?} outside {:?} of {prefix:?}",
                search.ranges()
            );
        }
    }

    /// What a prefix matches lies in its range, whatever the prefix and the
    /// email; nothing panics.
    #[test]
    fn a_prefix_matches_only_within_its_range(
        prefix in proptest::collection::vec(email_char(), 0..6),
        email in proptest::collection::vec(email_char(), 0..10),
    ) {
        let prefix: String = prefix.into_iter().collect();
        let Ok(Some(search)) = EmailPrefix::parse("email_prefix", &prefix) else {
            return Ok(());
        };
        let tail: String = email.into_iter().collect();
        for candidate in [format!("{prefix}{tail}"), tail.clone(), prefix.to_lowercase() + &tail] {
            let Ok(stored) = Email::parse("email", &format!("{candidate}@x.example")) else {
                continue;
            };
            let stored = stored.into_string();
            if search.matches(&stored) {
                prop_assert!(search.in_ranges(&stored),
                    "{stored:?} matches {prefix:?} outside {:?}", search.ranges());
            }
        }
    }

    /// A name people read that is accepted holds no control, invisible or
    /// line-breaking character; one with such a character is refused
    /// wherever the character stands.
    #[test]
    fn accepted_names_are_readable(
        raw in any::<String>(),
        name in "[A-Za-z0-9&.-][A-Za-z0-9 &.-]{0,18}[A-Za-z0-9&.-]",
        at in any::<proptest::sample::Index>(),
        bad in proptest::sample::select(&[
            '\u{202E}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{200D}', '\u{FEFF}',
            '\u{00AD}', '\u{061C}', '\u{2060}', '\u{E0041}', '\u{3164}', '\u{2028}', '\u{7}',
        ][..]),
    ) {
        if let Ok(accepted) = validate_organisation_name("organisation.name", &raw) {
            prop_assert!(!accepted.chars().any(crate::domain::text::is_unreadable));
        }
        let mut chars: Vec<char> = name.chars().collect();
        // Inside the name: what stands at its ends is trimmed away.
        chars.insert(1 + at.index(chars.len() - 1), bad);
        let spoofed: String = chars.into_iter().collect();
        prop_assert!(validate_organisation_name("organisation.name", &spoofed).is_err(), "{spoofed:?}");
        prop_assert!(crate::domain::api_token::validate_name("name", &spoofed).is_err(), "{spoofed:?}");
    }
}
