//! Property tests (proptest; `cargo fuzz` needs a nightly toolchain): the
//! request validation and token parsing code never panics on arbitrary
//! input, and what it accepts has the promised form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization as _;
use uuid::Uuid;

use crate::auth::authenticator::credential_from_headers;
use crate::auth::tokens::{AccessTokens, TokenClaims, TokenSettings};
use crate::domain::email::Email;
use crate::domain::paging::PageToken;
use crate::domain::playback::{Restrictions, Scope};
use crate::domain::user::{optional_id, parse_id, validate_organisation_name, validate_password};

fn tokens() -> AccessTokens {
    AccessTokens::new(
        b"a property-test key of at least 32 bytes",
        TokenSettings {
            issuer: "usermgmt".into(),
            audience: "usermgmt".into(),
            lifetime: std::time::Duration::from_secs(600),
        },
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
}
