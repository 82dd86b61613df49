//! A request fuzzer: random requests built from the contract's descriptors
//! (odd Unicode with NUL and bidi marks, extreme integers, timestamps and
//! durations, unknown enum values, nested messages and oneofs, repeated
//! fields of many entries, and now and then bytes that encode no request at
//! all), sent to every RPC anonymously, as an organisation's admin and as an
//! internal service. Every answer is OK or a client error, never INTERNAL,
//! UNKNOWN or a reset stream; the server logs no panic and no internal
//! error, and still serves.
//!
//! A fixed number of requests per RPC and caller, for a fixed seed and a
//! random one (printed; `USERMGMT_FUZZ_SEED=<seed>` replays one).

use std::fmt::Write as _;

use proptest::prelude::RngExt as _;
use proptest::test_runner::{RngAlgorithm, TestRng};
use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage as _, Value,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use usermgmt::proto::{self, Role};

use crate::playback::{for_streams, issue, make_secure};
use crate::support::contract::{call_raw, is_time, rpcs};
use crate::support::*;

/// Requests per RPC and seed, as the admin (who gets past the per-call
/// check everywhere) and as each other caller.
const ADMIN_CASES: usize = 24;
const OTHER_CASES: usize = 4;
const FIXED_SEED: u64 = 14;

/// What a caller presents: nothing, an admin's access token, a service key.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Anonymous,
    Admin,
    Service,
}

/// The answers a request may get: OK or a refusal that is the caller's
/// (RESOURCE_EXHAUSTED: a message too large, or the login limits).
fn acceptable(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// Builds random requests from descriptors.
struct Fuzzer {
    rng: TestRng,
    /// How likely a field is set, drawn for each request; none: exactly
    /// one field at each level. (Sparse requests get past the checks of
    /// the other fields to the one that is set.)
    density: Option<f64>,
    /// Whether every text of the request holds a NUL, drawn for each request.
    nul_in_text: bool,
    /// Values the service knows (ids, emails, tokens, permission ids), so
    /// that requests reach past the first checks.
    known: Vec<String>,
}

const ODD_TEXT: &[&str] = &[
    "",
    "\0",
    "a\0b",
    "\u{202E}evil\u{202C}",
    "\u{2066}\u{2069}",
    "\u{200B}",
    "\u{FEFF}",
    "\u{FFFF}",
    "\u{10FFFF}",
    "e\u{301}\u{301}\u{301}",
    "\u{1F980}",
    "'; DROP TABLE users; --",
    "%_\\",
    "../../etc/passwd",
    " ",
    "\r\n",
    "\u{7F}\u{1B}[31m",
    "*",
    "name",
    "secure_playback",
    "users.read",
    "live",
];

impl Fuzzer {
    fn new(seed: u64, known: Vec<String>) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Fuzzer {
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            density: None,
            nul_in_text: false,
            known,
        }
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.rng.random_range(0..from.len())]
    }

    fn text(&mut self) -> String {
        let text = self.any_text();
        if self.nul_in_text {
            self.insert(text, "\0")
        } else {
            text
        }
    }

    /// `text` with `odd` inserted at a random place.
    fn insert(&mut self, text: String, odd: &str) -> String {
        let at = self.rng.random_range(0..=text.len());
        let at = (0..=at)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}{odd}{}", &text[..at], &text[at..])
    }

    fn any_text(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0..=1 => (*self.pick(ODD_TEXT)).to_owned(),
            2..=3 => self.pick(&self.known.clone()).clone(),
            4..=5 => {
                let known = self.pick(&self.known.clone()).clone();
                let odd = *self.pick(&["\0", "\u{202E}", "\u{200B}", "\u{FEFF}", "\u{7F}"]);
                self.insert(known, odd)
            }
            6..=7 => {
                let len = self.rng.random_range(0..40);
                (0..len).map(|_| self.rng.random::<char>()).collect()
            }
            8 => {
                let len = self.rng.random_range(100..300);
                (0..len).map(|_| self.rng.random::<char>()).collect()
            }
            _ => {
                let c = self.rng.random::<char>();
                std::iter::repeat_n(c, self.rng.random_range(1_000..12_000)).collect()
            }
        }
    }

    fn i64(&mut self) -> i64 {
        let (any, recent): (i64, i64) = (
            self.rng.random(),
            self.rng.random_range(1_700_000_000..1_900_000_000),
        );
        *self.pick(&[
            0,
            1,
            -1,
            i64::MIN,
            i64::MAX,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            8_210_266_876_799,
            -62_135_596_801,
            -210_000_000_000,
            253_402_300_800,
            315_576_000_001,
            any,
            recent,
        ])
    }

    fn i32(&mut self) -> i32 {
        let (any, small): (i32, i32) = (self.rng.random(), self.rng.random_range(0..2_000));
        *self.pick(&[
            0,
            1,
            -1,
            i32::MIN,
            i32::MAX,
            999_999_999,
            1_000_000_000,
            any,
            small,
        ])
    }

    /// How many entries a repeated field gets: mostly a few, now and then many.
    fn entries(&mut self) -> usize {
        match self.rng.random_range(0..10) {
            0 => 0,
            1..=6 => 1,
            7..=8 => self.rng.random_range(2..6),
            _ => self.rng.random_range(50..400),
        }
    }

    fn message(&mut self, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        if is_time(descriptor) {
            message.set_field_by_name("seconds", Value::I64(self.i64()));
            message.set_field_by_name("nanos", Value::I32(self.i32()));
            return message;
        }
        let Some(density) = self.density else {
            let fields: Vec<FieldDescriptor> = descriptor.fields().collect();
            if !fields.is_empty() {
                let field = self.pick(&fields).clone();
                let value = self.field_value(&field, depth);
                message.set_field(&field, value);
            }
            return message;
        };
        for field in descriptor.fields() {
            if field.containing_oneof().is_some() || !self.rng.random_bool(density) {
                continue;
            }
            let value = self.field_value(&field, depth);
            message.set_field(&field, value);
        }
        // Oneofs: none, one, or two members (the last one sent wins).
        for oneof in descriptor.oneofs() {
            let members: Vec<FieldDescriptor> = oneof.fields().collect();
            for _ in 0..self.rng.random_range(0..3) {
                let field = self.pick(&members).clone();
                let value = self.field_value(&field, depth);
                message.set_field(&field, value);
            }
        }
        message
    }

    fn field_value(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        if field.is_list() {
            let n = self.entries();
            Value::List((0..n).map(|_| self.value(field, depth)).collect())
        } else {
            self.value(field, depth)
        }
    }

    fn value(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        match field.kind() {
            Kind::String => Value::String(self.text()),
            Kind::Bytes => {
                let n = self.rng.random_range(0..64);
                Value::Bytes((0..n).map(|_| self.rng.random::<u8>()).collect())
            }
            Kind::Bool => Value::Bool(self.rng.random()),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(self.i32()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.i64()),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(self.i32() as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.i64() as u64),
            Kind::Float => Value::F32(self.rng.random()),
            Kind::Double => Value::F64(self.rng.random()),
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                Value::EnumNumber(if self.rng.random_bool(0.7) {
                    *self.pick(&known)
                } else {
                    self.i32()
                })
            }
            Kind::Message(inner) if depth < 6 => Value::Message(self.message(&inner, depth + 1)),
            Kind::Message(inner) => Value::Message(DynamicMessage::new(inner)),
        }
    }

    /// A random request of type `descriptor`.
    fn request(&mut self, descriptor: &MessageDescriptor) -> DynamicMessage {
        self.density = *self.pick(&[None, None, None, Some(0.15), Some(0.5)]);
        self.nul_in_text = self.rng.random_bool(0.25);
        self.message(descriptor, 0)
    }

    /// The request's bytes: its encoding, now and then damaged.
    fn encode(&mut self, message: &DynamicMessage) -> (Vec<u8>, &'static str) {
        let mut bytes = message.encode_to_vec();
        let damage = match self.rng.random_range(0..12) {
            0 if !bytes.is_empty() => {
                let at = self.rng.random_range(0..bytes.len());
                bytes.truncate(at);
                " (its encoding cut short)"
            }
            1 if !bytes.is_empty() => {
                let at = self.rng.random_range(0..bytes.len());
                bytes[at] = self.rng.random();
                " (a byte of its encoding changed)"
            }
            2 => {
                let n = self.rng.random_range(1..32);
                bytes.extend((0..n).map(|_| self.rng.random::<u8>()));
                " (random bytes after its encoding)"
            }
            _ => "",
        };
        (bytes, damage)
    }
}

/// A seed of this run, besides the fixed one: `USERMGMT_FUZZ_SEED` or random.
fn random_seed() -> u64 {
    std::env::var("USERMGMT_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| getrandom::u64().expect("randomness"))
}

/// What a request was, in short, for a failure's message.
fn describe(message: &DynamicMessage) -> String {
    fn value(value: &Value) -> String {
        match value {
            Value::Message(message) => format!("{{{}}}", fields(message)),
            Value::List(items) if items.len() > 3 => {
                format!("[{}, … {} entries]", value_of(&items[0]), items.len())
            }
            Value::List(items) => format!(
                "[{}]",
                items.iter().map(value_of).collect::<Vec<_>>().join(", ")
            ),
            Value::String(text) if text.chars().count() > 40 => {
                let head: String = text.chars().take(20).collect();
                format!("{head:?}… ({} chars)", text.chars().count())
            }
            other => format!("{other:?}"),
        }
    }
    fn value_of(v: &Value) -> String {
        value(v)
    }
    fn fields(message: &DynamicMessage) -> String {
        message
            .fields()
            .map(|(field, v)| format!("{}: {}", field.name(), value(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
    format!("{} {{{}}}", message.descriptor().name(), fields(message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_to_every_rpc_get_a_client_error_and_the_server_keeps_serving() {
    let seeds = [FIXED_SEED, random_seed()];
    eprintln!(
        "fuzz seeds {seeds:?}: replay one with USERMGMT_FUZZ_SEED=<seed> cargo test --test integration fuzz"
    );
    let db = TestDb::new().await;
    let log_path = std::env::temp_dir().join(format!("usermgmt-fuzz-{}.log", db.name));
    let mut replica = Replica::start_logged(&db.url, &[], &log_path).await;
    let org = create_org(&db, "Acme").await;
    make_secure(&db, org.id).await;
    let service_key = register_service(&db, "streams").await;
    let channel = channel(replica.addr).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let user = admin
        .create_user("operator@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let playback = issue(&admin, for_streams(&["live"])).await.expect("issue");
    let known = vec![
        org.id.to_string(),
        org.admin_id.to_string(),
        user.id.clone(),
        org.admin_email.clone(),
        "new@acme.example.com".to_owned(),
        playback.token.clone(),
        playback.token_id.clone(),
        uuid::Uuid::now_v7().to_string(),
        PASSWORD.to_owned(),
        "user.create".to_owned(),
        "users.delete".to_owned(),
    ];

    let callers = [
        (Caller::Anonymous, vec![]),
        (
            Caller::Admin,
            vec![("authorization", format!("Bearer {}", admin.token))],
        ),
        (
            Caller::Service,
            vec![("x-usermgmt-service-key", service_key.clone())],
        ),
    ];
    let rpcs = rpcs();
    let mut failures = Vec::new();
    let mut sent = 0;
    for seed in seeds {
        let mut fuzzer = Fuzzer::new(seed, known.clone());
        for (path, request) in &rpcs {
            for (caller, metadata) in &callers {
                let cases = match caller {
                    Caller::Admin => ADMIN_CASES,
                    Caller::Anonymous | Caller::Service => OTHER_CASES,
                };
                for _ in 0..cases {
                    let message = fuzzer.request(request);
                    let (bytes, damage) = fuzzer.encode(&message);
                    let code = match call_raw(&channel, path, bytes, metadata).await {
                        Ok(_) => Code::Ok,
                        Err(status) => status.code(),
                    };
                    sent += 1;
                    if !acceptable(code) {
                        failures.push(format!(
                            "seed {seed}: {path} as {caller:?} answered {code:?} to {}{damage}",
                            describe(&message)
                        ));
                    }
                }
            }
        }
    }

    let log = std::fs::read_to_string(&log_path).expect("the server's log");
    let mut report = String::new();
    // Whole requests first: they say more than damaged bytes.
    failures.sort_by_key(|failure| failure.ends_with(')'));
    for failure in failures.iter().take(10) {
        let _ = writeln!(report, "{failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} requests answered neither OK nor a client error (seeds {seeds:?}):\n{report}",
        failures.len()
    );
    for line in log.lines() {
        assert!(
            !line.contains("panicked") && !line.contains("internal error"),
            "the server logged, with seeds {seeds:?}: {line}"
        );
    }
    assert!(replica.is_running(), "the server exited (seeds {seeds:?})");
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    // Still answering calls that read the database, on a new connection too
    // (whatever the fuzzer did to the admin: a second admin may have
    // demoted it, and its email may have reached the login limit).
    let fresh = crate::support::channel(replica.addr).await;
    let keys = proto::playback_token_service_client::PlaybackTokenServiceClient::new(fresh.clone())
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("list signing keys");
    assert!(!keys.into_inner().keys.is_empty());
    let decision = proto::auth_service_client::AuthServiceClient::new(fresh)
        .authorize(with_header(
            proto::AuthorizeRequest {
                credential: Some(proto::Credential {
                    kind: Some(proto::credential::Kind::ApiKey(org.api_key.clone())),
                }),
                permission: "users.read".into(),
                organisation_id: String::new(),
            },
            "x-usermgmt-service-key",
            &service_key,
        ))
        .await
        .expect("authorize")
        .into_inner();
    assert!(decision.allowed, "{decision:?}");
    let _ = std::fs::remove_file(&log_path);
    eprintln!(
        "fuzz: {sent} requests to {} RPCs, every answer a client's",
        rpcs.len()
    );
}
