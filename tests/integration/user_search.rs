//! ListUsers by the start of the email: in the same normal form as stored
//! emails, literally (no wildcards), in email order, keyset-paged with
//! tokens bound to the filter, combined with the role and state filters.

use std::collections::BTreeSet;

use tonic::Code;
use tonic::transport::Channel;
use usermgmt::proto::{self, Role, UserState, user_service_client::UserServiceClient};

use crate::support::*;

/// Users of the searched organisation, besides its admin. Stored as the
/// service stores emails: lower case, NFC.
const EMAILS: [&str; 25] = [
    "a_b@x.example.com",
    "axb@x.example.com",
    "a%b@x.example.com",
    "azb@x.example.com",
    "a.b@x.example.com",
    "ab@x.example.com",
    "al@x.example.com",
    "alice@x.example.com",
    "alicia@y.example.com",
    "alina@x.example.com",
    "alison@z.example.com",
    "allan@x.example.com",
    "ally@x.example.com",
    "alma@x.example.com",
    "aloysius@x.example.com",
    "b@x.example.com",
    "bob@x.example.com",
    "bobby@x.example.com",
    "carol@x.example.com",
    "caroline@x.example.com",
    "\u{e9}lodie@x.example.com",
    "\u{e9}loise@x.example.com",
    "eloise@x.example.com",
    "zed@x.example.com",
    "zoe@x.example.com",
];

fn search(
    prefix: &str,
    role: Role,
    state: UserState,
    page_size: i32,
    page_token: &str,
) -> proto::ListUsersRequest {
    proto::ListUsersRequest {
        page_size,
        page_token: page_token.into(),
        role: role as i32,
        state: state as i32,
        email_prefix: prefix.into(),
    }
}

/// One page of ListUsers as the signed-in `token`.
async fn page(
    channel: &Channel,
    token: &str,
    request: proto::ListUsersRequest,
) -> Result<proto::ListUsersResponse, tonic::Status> {
    UserServiceClient::new(channel.clone())
        .list_users(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// Every page of a query: the users in the order served, and each page's
/// size and total_size.
struct Paged {
    users: Vec<proto::User>,
    sizes: Vec<usize>,
    totals: BTreeSet<i32>,
}

impl Paged {
    fn emails(&self) -> Vec<String> {
        self.users.iter().map(|user| user.email.clone()).collect()
    }
}

async fn all_pages(channel: &Channel, token: &str, mut request: proto::ListUsersRequest) -> Paged {
    let mut paged = Paged {
        users: Vec::new(),
        sizes: Vec::new(),
        totals: BTreeSet::new(),
    };
    loop {
        let response = page(channel, token, request.clone())
            .await
            .unwrap_or_else(|status| panic!("list users with {request:?}: {status:?}"));
        paged.sizes.push(response.users.len());
        paged.totals.insert(response.total_size);
        paged.users.extend(response.users);
        if response.next_page_token.is_empty() {
            return paged;
        }
        assert!(
            paged.sizes.len() <= 100,
            "no end to the pages of {request:?}"
        );
        request.page_token = response.next_page_token;
    }
}

/// The emails starting with `normal`, in byte order.
fn expected(emails: &[String], normal: &str) -> Vec<String> {
    let mut matching: Vec<String> = emails
        .iter()
        .filter(|email| email.starts_with(normal))
        .cloned()
        .collect();
    matching.sort();
    matching
}

/// Both steps of SuspendUser with the organisation API key.
async fn suspend(channel: &Channel, api_key: &str, user_id: &str) {
    let key = Caller::ApiKey(api_key.into());
    let Done::Suspended(user) =
        two_step::both(channel, &key, &TwoStep::SuspendUser(user_id.into()))
            .await
            .unwrap_or_else(|status| panic!("suspending {user_id}: {status:?}"))
    else {
        panic!("expected {user_id} suspended");
    };
    assert_eq!(user.state, UserState::Suspended as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_finds_exactly_its_users_in_email_order_page_by_page() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    for email in EMAILS {
        insert_user(&server.db, org.id, email, "nanoUser").await;
    }
    // Same emails elsewhere: never found from Acme.
    for email in [
        "alice@x.example.com",
        "a_b@x.example.com",
        "bob@x.example.com",
    ] {
        insert_user(&server.db, globex.id, email, "nanoUser").await;
    }
    let mut emails: Vec<String> = EMAILS.iter().map(|email| (*email).to_owned()).collect();
    emails.push(org.admin_email.clone());
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    // The prefix as typed, and its normal form (trimmed, NFC, lower case).
    let cases = [
        ("A", "a"),
        ("a_", "a_"),
        ("a%", "a%"),
        ("a.", "a."),
        ("AL", "al"),
        ("  Ali\t", "ali"),
        ("ALICIA@Y.EXAMPLE.COM", "alicia@y.example.com"),
        ("E\u{301}LO", "\u{e9}lo"),
        ("\u{c9}", "\u{e9}"),
        ("e", "e"),
        ("BoB", "bob"),
        ("admin@ACME", "admin@acme"),
        ("c", "c"),
        ("zz", "zz"),
        ("%", "%"),
        ("_", "_"),
    ];
    for (typed, normal) in cases {
        let want = expected(&emails, normal);
        let paged = all_pages(
            &channel,
            &token,
            search(typed, Role::Unspecified, UserState::Unspecified, 3, ""),
        )
        .await;
        let got = paged.emails();
        assert_eq!(got, want, "prefix {typed:?}: exactly its users, in order");
        let unique: BTreeSet<&String> = paged.users.iter().map(|user| &user.id).collect();
        assert_eq!(unique.len(), got.len(), "prefix {typed:?}: no user twice");
        assert_eq!(
            paged.totals,
            BTreeSet::from([0]),
            "prefix {typed:?}: no total"
        );
        let pages = want.len().div_ceil(3).max(1);
        assert_eq!(
            paged.sizes.len(),
            pages,
            "prefix {typed:?}: {:?}",
            paged.sizes
        );
        assert!(
            paged.sizes[..pages - 1].iter().all(|size| *size == 3),
            "prefix {typed:?}: full pages before the last: {:?}",
            paged.sizes
        );
    }
    // The wildcards of LIKE are plain characters.
    assert_eq!(expected(&emails, "a_"), ["a_b@x.example.com"]);
    assert_eq!(expected(&emails, "a%"), ["a%b@x.example.com"]);

    // Page sizes do not change what is found.
    let one_by_one = all_pages(
        &channel,
        &token,
        search("al", Role::Unspecified, UserState::Unspecified, 1, ""),
    )
    .await;
    assert_eq!(one_by_one.emails(), expected(&emails, "al"));
    let at_once = page(
        &channel,
        &token,
        search("al", Role::Unspecified, UserState::Unspecified, 0, ""),
    )
    .await
    .expect("one page");
    assert!(at_once.next_page_token.is_empty());
    assert_eq!(
        at_once
            .users
            .iter()
            .map(|user| user.email.clone())
            .collect::<Vec<_>>(),
        expected(&emails, "al")
    );

    // Without a prefix: creation order, and counted.
    let everyone = all_pages(
        &channel,
        &token,
        search("", Role::Unspecified, UserState::Unspecified, 3, ""),
    )
    .await;
    assert_eq!(everyone.users.len(), 26);
    assert_eq!(everyone.totals, BTreeSet::from([26]));
    assert_eq!(everyone.users[0].id, org.admin_id.to_string());
    let created: Vec<String> = everyone.users[1..]
        .iter()
        .map(|user| user.email.clone())
        .collect();
    assert_eq!(created, EMAILS, "oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_combines_with_the_role_and_state_filters() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let people = [
        ("ops-ann@acme.example.com", "nanoUser", false),
        ("ops-ben@acme.example.com", "nanoReadOnly", false),
        ("ops-cat@acme.example.com", "nanoAdmin", false),
        ("ops-dan@acme.example.com", "nanoUser", false),
        ("ops-eve@acme.example.com", "nanoUser", true),
        ("ops-fay@acme.example.com", "nanoReadOnly", true),
        ("ops-gus@acme.example.com", "nanoAdmin", true),
        ("dev-hal@acme.example.com", "nanoUser", true),
        ("dev-ian@acme.example.com", "nanoUser", false),
    ];
    for (email, role, suspended) in people {
        let id = insert_user(&server.db, org.id, email, role).await;
        if suspended {
            suspend(&channel, &org.api_key, &id.to_string()).await;
        }
    }
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let admin = org.admin_email.as_str();

    let searches: [(&str, Role, UserState, &[&str]); 8] = [
        (
            "OPS-",
            Role::NanoUser,
            UserState::Unspecified,
            &["ops-ann", "ops-dan", "ops-eve"],
        ),
        (
            "ops-",
            Role::Unspecified,
            UserState::Suspended,
            &["ops-eve", "ops-fay", "ops-gus"],
        ),
        (
            "ops-",
            Role::Unspecified,
            UserState::Active,
            &["ops-ann", "ops-ben", "ops-cat", "ops-dan"],
        ),
        (
            "Ops-",
            Role::NanoUser,
            UserState::Active,
            &["ops-ann", "ops-dan"],
        ),
        ("ops-", Role::NanoAdmin, UserState::Suspended, &["ops-gus"]),
        (
            "o",
            Role::NanoReadOnly,
            UserState::Unspecified,
            &["ops-ben", "ops-fay"],
        ),
        ("d", Role::NanoUser, UserState::Suspended, &["dev-hal"]),
        ("dev-i", Role::NanoAdmin, UserState::Unspecified, &[]),
    ];
    for (prefix, role, state, names) in searches {
        let paged = all_pages(&channel, &token, search(prefix, role, state, 2, "")).await;
        let want: Vec<String> = names
            .iter()
            .map(|name| format!("{name}@acme.example.com"))
            .collect();
        assert_eq!(paged.emails(), want, "{prefix:?} {role:?} {state:?}");
        assert_eq!(paged.totals, BTreeSet::from([0]), "{prefix:?}: no total");
        for user in &paged.users {
            if role != Role::Unspecified {
                assert_eq!(user.role, role as i32, "{user:?}");
            }
            if state != UserState::Unspecified {
                assert_eq!(user.state, state as i32, "{user:?}");
            }
        }
    }

    // Without a prefix: the total counts the role and state filters.
    let counted: [(Role, UserState, &[&str]); 7] = [
        (
            Role::Unspecified,
            UserState::Suspended,
            &["ops-eve", "ops-fay", "ops-gus", "dev-hal"],
        ),
        (
            Role::Unspecified,
            UserState::Active,
            &[admin, "ops-ann", "ops-ben", "ops-cat", "ops-dan", "dev-ian"],
        ),
        (
            Role::NanoUser,
            UserState::Suspended,
            &["ops-eve", "dev-hal"],
        ),
        (
            Role::NanoUser,
            UserState::Active,
            &["ops-ann", "ops-dan", "dev-ian"],
        ),
        (Role::NanoAdmin, UserState::Active, &[admin, "ops-cat"]),
        (Role::NanoReadOnly, UserState::Suspended, &["ops-fay"]),
        (
            Role::Unspecified,
            UserState::Unspecified,
            &[
                admin, "ops-ann", "ops-ben", "ops-cat", "ops-dan", "ops-eve", "ops-fay", "ops-gus",
                "dev-hal", "dev-ian",
            ],
        ),
    ];
    for (role, state, names) in counted {
        let paged = all_pages(&channel, &token, search("", role, state, 2, "")).await;
        let want: Vec<String> = names
            .iter()
            .map(|name| {
                if name.contains('@') {
                    (*name).to_owned()
                } else {
                    format!("{name}@acme.example.com")
                }
            })
            .collect();
        assert_eq!(paged.emails(), want, "{role:?} {state:?}: creation order");
        let total = i32::try_from(want.len()).expect("a small count");
        assert_eq!(paged.totals, BTreeSet::from([total]), "{role:?} {state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_are_bound_to_the_prefix_and_bad_prefixes_are_named() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    for email in [
        "alpha@acme.example.com",
        "alto@acme.example.com",
        "alvin@acme.example.com",
        "amber@acme.example.com",
    ] {
        insert_user(&server.db, org.id, email, "nanoUser").await;
    }
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let any_role = Role::Unspecified;
    let any_state = UserState::Unspecified;

    let first = page(&channel, &token, search("al", any_role, any_state, 1, ""))
        .await
        .expect("first page of al");
    assert_eq!(first.users[0].email, "alpha@acme.example.com");
    assert!(!first.next_page_token.is_empty());
    let unfiltered = page(&channel, &token, search("", any_role, any_state, 1, ""))
        .await
        .expect("first page, no prefix");
    assert!(!unfiltered.next_page_token.is_empty());

    let refused = [
        (
            "another prefix",
            search("alp", any_role, any_state, 1, &first.next_page_token),
        ),
        (
            "no prefix",
            search("", any_role, any_state, 1, &first.next_page_token),
        ),
        (
            "the prefix and a state",
            search("al", any_role, UserState::Active, 1, &first.next_page_token),
        ),
        (
            "the prefix and a role",
            search("al", Role::NanoUser, any_state, 1, &first.next_page_token),
        ),
        (
            "an unfiltered token with a prefix",
            search("al", any_role, any_state, 1, &unfiltered.next_page_token),
        ),
    ];
    for (what, request) in refused {
        let status = assert_status(
            page(&channel, &token, request).await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(violated_fields(&status), ["page_token"], "{what}");
    }
    // The same prefix in another case is the same filter.
    let second = page(
        &channel,
        &token,
        search("AL", any_role, any_state, 1, &first.next_page_token),
    )
    .await
    .expect("second page of al");
    assert_eq!(second.users[0].email, "alto@acme.example.com");
    assert_eq!(second.total_size, 0);

    let too_long = "a".repeat(300);
    let just_too_long = "a".repeat(255);
    for bad in [
        " a b",
        "a b",
        "a\tb",
        "a\u{7}b",
        "al\u{200b}",
        "a\u{202e}l",
        too_long.as_str(),
        just_too_long.as_str(),
    ] {
        let status = assert_status(
            page(&channel, &token, search(bad, any_role, any_state, 0, "")).await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(violated_fields(&status), ["email_prefix"], "prefix {bad:?}");
    }
    // The longest prefix is allowed, and finds nobody here.
    let longest = page(
        &channel,
        &token,
        search(&"a".repeat(254), any_role, any_state, 0, ""),
    )
    .await
    .expect("a prefix of 254 bytes");
    assert!(longest.users.is_empty());
    // Every bad field is named at once.
    let status = assert_status(
        page(
            &channel,
            &token,
            search(&too_long, any_role, any_state, -1, "!!"),
        )
        .await,
        Code::InvalidArgument,
        None,
    );
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["email_prefix", "page_size", "page_token"]);
}

/// Rows whose email is not in the normal form (written by SQL, imported):
/// the search compares `lower(email)`, so they are found, and the next page
/// must start after the last row in that same order, or it starts at the
/// same row again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_in_another_case_are_found_once_across_pages() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let stored = [
        "Mx1@acme.example.com",
        "MX2@acme.example.com",
        "mx3@acme.example.com",
        "Mx4@acme.example.com",
    ];
    for email in stored {
        insert_user(&server.db, org.id, email, "nanoUser").await;
    }
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut request = search("MX", Role::Unspecified, UserState::Unspecified, 1, "");
    let mut seen = Vec::new();
    for _ in 0..=stored.len() {
        let response = page(&channel, &token, request.clone())
            .await
            .expect("a page of mx");
        seen.extend(response.users.into_iter().map(|user| user.email));
        if response.next_page_token.is_empty() {
            break;
        }
        request.page_token = response.next_page_token;
    }
    assert_eq!(seen, stored, "each row once, in lower-case order");
}

/// Every email of `want` is among the users `prefix` finds (all pages), and
/// none is served twice.
async fn assert_finds(channel: &Channel, token: &str, prefix: &str, want: &[&str]) {
    let paged = all_pages(
        channel,
        token,
        search(prefix, Role::Unspecified, UserState::Unspecified, 50, ""),
    )
    .await;
    let got = paged.emails();
    for email in want {
        assert!(
            got.iter().any(|found| found == email),
            "prefix {prefix:?} ({:?}) misses {email:?} ({:?}); found {got:?}",
            prefix
                .chars()
                .map(|c| format!("{:X}", u32::from(c)))
                .collect::<Vec<_>>(),
            email
                .chars()
                .map(|c| format!("{:X}", u32::from(c)))
                .collect::<Vec<_>>(),
        );
    }
    let unique: BTreeSet<&String> = paged.users.iter().map(|user| &user.id).collect();
    assert_eq!(unique.len(), got.len(), "prefix {prefix:?}: no user twice");
}

/// The review's cases: the last code point after the prefix, and Greek
/// sigma, whose lower case depends on what follows it (σ inside a word, ς at
/// its end), so that the stored email and a prefix typed in capitals
/// lower-case it differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_finds_the_last_code_point_and_every_sigma() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let stored = [
        "a\u{10FFFF}b@x.example.com",
        "\u{10FFFF}@x.example.com",
        "σασα@x.example.com",
        // ΣΑΣ@… as the service stores it: the last Σ ends a word.
        "σας@x.example.com",
        "ας-σ@x.example.com",
    ];
    for email in stored {
        insert_user(&server.db, org.id, email, "nanoUser").await;
    }
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    assert_finds(&channel, &token, "a", &["a\u{10FFFF}b@x.example.com"]).await;
    assert_finds(
        &channel,
        &token,
        "A\u{10FFFF}",
        &["a\u{10FFFF}b@x.example.com"],
    )
    .await;
    assert_finds(
        &channel,
        &token,
        "\u{10FFFF}",
        &["\u{10FFFF}@x.example.com"],
    )
    .await;
    assert_finds(
        &channel,
        &token,
        "\u{10FFFF}@",
        &["\u{10FFFF}@x.example.com"],
    )
    .await;
    for prefix in ["ΣΑΣ", "σασ", "Σ", "ΣΑ"] {
        assert_finds(
            &channel,
            &token,
            prefix,
            &["σασα@x.example.com", "σας@x.example.com"],
        )
        .await;
    }
    assert_finds(&channel, &token, "ΣΑΣΑ", &["σασα@x.example.com"]).await;
    assert_finds(&channel, &token, "ΣΑΣ@", &["σας@x.example.com"]).await;
    assert_finds(&channel, &token, "σας", &["σας@x.example.com"]).await;
    assert_finds(&channel, &token, "ΑΣ-Σ", &["ας-σ@x.example.com"]).await;
    assert_finds(&channel, &token, "ας-ς", &["ας-σ@x.example.com"]).await;
}

/// Characters for generated emails: ASCII, Greek capitals and small letters
/// with both sigmas, composed and decomposed accents (and marks of other
/// combining classes, which canonical order moves), letters whose capital
/// decomposes (ǰ, ΐ), the dotted capital I, Hangul syllables and jamo,
/// and the last code point.
const ALPHABET: &[char] = &[
    'a',
    'B',
    'e',
    'E',
    'i',
    'I',
    'j',
    'J',
    'o',
    'z',
    '.',
    '-',
    '_',
    '%',
    'Σ',
    'σ',
    'ς',
    'Α',
    'α',
    'ι',
    'ΐ',
    '\u{301}',
    '\u{323}',
    '\u{308}',
    '\u{30C}',
    '\u{345}',
    'é',
    'É',
    'ǰ',
    'İ',
    'ß',
    '가',
    '각',
    '\u{1100}',
    '\u{1161}',
    '\u{11A8}',
    '\u{10FFFF}',
    'ﬀ',
];

/// The raw emails the generator draws: a local part of 1 to 10 characters
/// of `ALPHABET`, at one of two domains.
fn generated_raw_emails(count: usize) -> Vec<String> {
    use proptest::strategy::{Strategy as _, ValueTree as _};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let local = proptest::collection::vec(proptest::sample::select(ALPHABET), 1..=10);
    let domain = proptest::sample::select(&["x.example.com", "Ü.example.com"][..]);
    let strategy = (local, domain)
        .prop_map(|(local, domain)| format!("{}@{domain}", local.into_iter().collect::<String>()));
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("a generated email")
                .current()
        })
        .collect()
}

/// `raw` typed with each character in upper, lower or its own case, as
/// chosen by `choice`.
fn retyped(raw: &str, choice: u64) -> String {
    raw.chars()
        .enumerate()
        .map(|(i, c)| match (choice >> ((2 * i) % 64)) & 3 {
            0 => c.to_uppercase().collect::<String>(),
            1 => c.to_lowercase().collect::<String>(),
            _ => c.to_string(),
        })
        .collect()
}

/// The property the review asked for, against the real database: for
/// generated emails, typed in any case that is still the same email, every
/// prefix of what the user types finds it. A prefix does not split a letter
/// from the accents typed after it (a bare letter means the bare letter:
/// "e" does not find "é…", as the test above has it); it may end inside
/// the accents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prefix_of_a_generated_email_finds_it() {
    use unicode_normalization::char::canonical_combining_class;
    use usermgmt::domain::email::Email;

    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let mut stored: Vec<(String, String)> = Vec::new();
    for raw in generated_raw_emails(60) {
        let Ok(email) = Email::parse("email", &raw) else {
            continue;
        };
        let email = email.into_string();
        if stored.iter().all(|(_, known)| *known != email) {
            insert_user(&server.db, org.id, &email, "nanoUser").await;
            stored.push((raw, email));
        }
    }
    assert!(stored.len() >= 40, "{} emails stored", stored.len());
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut checked = 0;
    for (n, (raw, email)) in stored.iter().enumerate() {
        for choice in [
            0,
            u64::MAX / 3,
            0x9E37_79B9_7F4A_7C15_u64.rotate_left(n as u32),
        ] {
            let typed = retyped(raw, choice);
            if Email::parse("email", &typed).map(Email::into_string).ok() != Some(email.clone()) {
                continue;
            }
            let chars: Vec<char> = typed.chars().collect();
            for end in 1..=chars.len() {
                let splits_a_letter = chars.get(end).is_some_and(|next| {
                    canonical_combining_class(*next) != 0
                        && canonical_combining_class(chars[end - 1]) == 0
                });
                if splits_a_letter {
                    continue;
                }
                let prefix: String = chars[..end].iter().collect();
                assert_finds(&channel, &token, &prefix, &[email.as_str()]).await;
                checked += 1;
            }
        }
    }
    assert!(checked >= 400, "{checked} prefixes checked");
}

/// A prefix ending in an accent ranges over every email that starts with
/// the bare letter: "é" reads the "e…" rows, which never match. One call
/// reads at most a bound of rows (1,000, or the page if larger) and then
/// answers with what it found and a token after the last row it read:
/// pages may be short, even empty, and still have a next page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_reads_a_bounded_number_of_rows_per_call() {
    const PLAIN: i64 = 2_500;
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    server
        .db
        .client()
        .await
        .execute(
            "INSERT INTO users (id, organisation_id, email, role, token_key, password_hash) \
             SELECT gen_random_uuid(), $1, 'e' || lpad(n::text, 5, '0') || '@x.example.com', \
                    'nanoUser', gen_random_uuid(), $2 \
             FROM generate_series(1, $3::bigint) AS n",
            &[&org.id, &hash(PASSWORD).await, &PLAIN],
        )
        .await
        .expect("insert the e… users");
    // After every "e…" email in code point order.
    let accented = [
        "\u{e9}a@x.example.com",
        "\u{e9}b@x.example.com",
        "\u{e9}c@x.example.com",
    ];
    for email in accented {
        insert_user(&server.db, org.id, email, "nanoUser").await;
    }
    let channel = server.channel().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    for page_size in [2, 1000] {
        let paged = all_pages(
            &channel,
            &token,
            search(
                "\u{e9}",
                Role::Unspecified,
                UserState::Unspecified,
                page_size,
                "",
            ),
        )
        .await;
        assert_eq!(
            paged.emails(),
            accented,
            "page size {page_size}: exactly the é… users, in order, each once"
        );
        // 2,500 rows that do not match come first: a call that reads at
        // most ~1,000 of them answers at least twice with an empty page and
        // a token before the first é… user.
        let empty_first = paged.sizes.iter().take_while(|size| **size == 0).count();
        assert!(empty_first >= 2, "page size {page_size}: {:?}", paged.sizes);
    }

    // The first page is short (empty) yet not the last.
    let first = page(
        &channel,
        &token,
        search("\u{e9}", Role::Unspecified, UserState::Unspecified, 2, ""),
    )
    .await
    .expect("a page of é");
    assert!(first.users.is_empty(), "{:?}", first.users);
    assert!(
        !first.next_page_token.is_empty(),
        "a short page with a token"
    );
    // Its token is bound to the prefix like any other.
    let elsewhere = assert_status(
        page(
            &channel,
            &token,
            search(
                "e",
                Role::Unspecified,
                UserState::Unspecified,
                2,
                &first.next_page_token,
            ),
        )
        .await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&elsewhere), ["page_token"]);

    // Where every row read matches, pages stay full: the bound shortens
    // only pages whose rows do not match.
    let plain = all_pages(
        &channel,
        &token,
        search("e", Role::Unspecified, UserState::Unspecified, 1000, ""),
    )
    .await;
    assert_eq!(plain.users.len(), 2_500);
    assert_eq!(plain.sizes[..2], [1000, 1000], "{:?}", plain.sizes);
}
