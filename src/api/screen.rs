//! The rules every request value obeys ([`crate::domain::input`]: no NUL in
//! text, timestamps and durations within the contract's ranges), applied to
//! every field of every request of the contract before its handler runs, so
//! that a field added to the contract cannot escape them. A tower layer
//! reads the call's request message, decodes it by the contract's
//! descriptors (prost-reflect), walks every field that is set, nested and
//! repeated ones too, and answers INVALID_ARGUMENT with one field violation
//! per offending value; a request that is not an encoding of its message is
//! refused the same way. Otherwise the call goes on with the same bytes.
//! It runs after the per-call check, so an anonymous caller of a method that
//! needs a credential still learns only that.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, BodyStream, StreamBody};
use prost::bytes::{Buf as _, Bytes, BytesMut};
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage as _, Value,
};
use tonic::body::Body;

use crate::domain::error::Violations;
use crate::domain::{DomainError, input};
use crate::status::to_status;
use crate::tower_util::{self, CheckLayer};

/// At most this many violations are reported: a repeated field may hold
/// thousands of bad entries, and the answer must stay small.
const MAX_VIOLATIONS: usize = 16;
/// The gRPC message prefix: a compression flag and a 4-byte length.
const PREFIX_LEN: usize = 5;

/// The request message of every RPC of the contract, by its path.
#[derive(Debug, Clone)]
pub struct RequestMessages {
    by_path: HashMap<String, MessageDescriptor>,
}

impl RequestMessages {
    /// The contract's, from the descriptors compiled with it.
    pub fn of_contract() -> Result<Self, prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)?;
        let by_path = pool
            .services()
            .flat_map(|service| {
                service
                    .methods()
                    .map(|method| {
                        (
                            format!("/{}/{}", service.full_name(), method.name()),
                            method.input(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Self { by_path })
    }

    pub fn of_path(&self, path: &str) -> Option<&MessageDescriptor> {
        self.by_path.get(path)
    }
}

/// Checks one encoded request message of type `descriptor` against the rules.
pub fn screen(descriptor: &MessageDescriptor, encoded: &[u8]) -> Result<(), DomainError> {
    let message = DynamicMessage::decode(descriptor.clone(), encoded).map_err(|_| {
        DomainError::invalid(
            "",
            format!(
                "the request is not an encoding of {}",
                descriptor.full_name()
            ),
        )
    })?;
    let mut violations = Violations::default();
    let mut found = 0;
    walk_message(&message, "", &mut |result| {
        if result.is_err() && found < MAX_VIOLATIONS {
            found += 1;
            violations.check(result);
        }
    });
    violations.into_result()
}

type Check<'a> = dyn FnMut(Result<(), DomainError>) + 'a;

fn walk_message(message: &DynamicMessage, path: &str, check: &mut Check<'_>) {
    match message.descriptor().full_name() {
        "google.protobuf.Timestamp" => {
            let (seconds, nanos) = seconds_and_nanos(message);
            check(input::timestamp(path, seconds, nanos).map(|_| ()));
        }
        "google.protobuf.Duration" => {
            let (seconds, nanos) = seconds_and_nanos(message);
            check(input::duration(path, seconds, nanos));
        }
        _ => {
            for (field, value) in message.fields() {
                let path = if path.is_empty() {
                    field.name().to_owned()
                } else {
                    format!("{path}.{}", field.name())
                };
                walk_value(value, &path, check);
            }
        }
    }
}

fn walk_value(value: &Value, path: &str, check: &mut Check<'_>) {
    match value {
        Value::String(text) => check(input::text(path, text)),
        Value::Message(message) => walk_message(message, path, check),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), check);
            }
        }
        // Keys are named by position: a key is the caller's text.
        Value::Map(entries) => {
            for (i, (key, item)) in entries.iter().enumerate() {
                if let prost_reflect::MapKey::String(text) = key {
                    check(input::text(&format!("{path}[{i}].key"), text));
                }
                walk_value(item, &format!("{path}[{i}]"), check);
            }
        }
        _ => {}
    }
}

fn seconds_and_nanos(message: &DynamicMessage) -> (i64, i32) {
    let seconds = message
        .get_field_by_name("seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    let nanos = message
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or_default();
    (seconds, nanos)
}

/// Deeper nesting is left to the full screen (prost refuses past 100).
const MAX_QUICK_DEPTH: u32 = 32;
/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// Whether `encoded` is certainly a clean encoding of `descriptor`: read on
/// the wire, without decoding into values, so that the usual call costs no
/// allocation. `false` means "not certain" (a violation, a malformed or
/// unusual encoding): [`screen`] then decides and names the fields.
pub fn quickly_clean(descriptor: &MessageDescriptor, encoded: &[u8]) -> bool {
    clean_on_the_wire(descriptor, encoded, 0)
}

fn clean_on_the_wire(descriptor: &MessageDescriptor, mut bytes: &[u8], depth: u32) -> bool {
    if depth > MAX_QUICK_DEPTH {
        return false;
    }
    let time = match descriptor.full_name() {
        "google.protobuf.Timestamp" => Some(true),
        "google.protobuf.Duration" => Some(false),
        _ => None,
    };
    let (mut seconds, mut nanos) = (None::<u64>, None::<u64>);
    // Message fields seen once already: a second occurrence is merged by
    // decoders, which the full screen judges.
    let mut singular_messages_seen = 0u128;
    while !bytes.is_empty() {
        let Some(key) = read_varint(&mut bytes) else {
            return false;
        };
        let Some(number) = u32::try_from(key >> 3)
            .ok()
            .filter(|n| (1..=MAX_FIELD_NUMBER).contains(n))
        else {
            return false;
        };
        let field = descriptor.get_field(number);
        let kind = field.as_ref().map(prost_reflect::FieldDescriptor::kind);
        let list = field.as_ref().is_some_and(|f| f.is_list() || f.is_map());
        match key & 7 {
            0 => {
                let Some(value) = read_varint(&mut bytes) else {
                    return false;
                };
                if kind.as_ref().is_some_and(|k| !is_varint_kind(k)) {
                    return false;
                }
                if time.is_some() {
                    let slot = match number {
                        1 => &mut seconds,
                        2 => &mut nanos,
                        _ => continue,
                    };
                    if slot.replace(value).is_some() {
                        return false;
                    }
                }
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                if bytes.len() < width
                    || kind.as_ref().is_some_and(|k| fixed_width(k) != Some(width))
                {
                    return false;
                }
                bytes = &bytes[width..];
            }
            2 => {
                let Some(length) = read_varint(&mut bytes)
                    .and_then(|l| usize::try_from(l).ok())
                    .filter(|l| *l <= bytes.len())
                else {
                    return false;
                };
                let (value, rest) = bytes.split_at(length);
                bytes = rest;
                let clean = match &kind {
                    None | Some(Kind::Bytes) => true,
                    Some(Kind::String) => {
                        std::str::from_utf8(value).is_ok_and(|t| !t.contains('\0'))
                    }
                    Some(Kind::Message(inner)) => {
                        let first = if list {
                            true
                        } else {
                            let bit = 1u128.checked_shl(number).unwrap_or(0);
                            let first = bit != 0 && singular_messages_seen & bit == 0;
                            singular_messages_seen |= bit;
                            first
                        };
                        first && clean_on_the_wire(inner, value, depth + 1)
                    }
                    Some(scalar) if list => packed_clean(scalar, value),
                    Some(_) => false,
                };
                if !clean {
                    return false;
                }
            }
            _ => return false,
        }
    }
    match time {
        None => true,
        Some(is_timestamp) => {
            // int64 and int32 as decoders read them (two's complement,
            // int32 truncated).
            let seconds = seconds.unwrap_or(0) as i64;
            let nanos = nanos.unwrap_or(0) as i32;
            if is_timestamp {
                input::timestamp("", seconds, nanos).is_ok()
            } else {
                input::duration("", seconds, nanos).is_ok()
            }
        }
    }
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        // The tenth byte holds the 64th bit only (as prost reads it).
        if i == 9 && *byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

fn is_varint_kind(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Bool
            | Kind::Enum(_)
    )
}

fn fixed_width(kind: &Kind) -> Option<usize> {
    match kind {
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => Some(8),
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => Some(4),
        _ => None,
    }
}

/// A packed repeated scalar: whole elements of its kind.
fn packed_clean(kind: &Kind, mut value: &[u8]) -> bool {
    if is_varint_kind(kind) {
        while !value.is_empty() {
            if read_varint(&mut value).is_none() {
                return false;
            }
        }
        return true;
    }
    fixed_width(kind).is_some_and(|width| value.len().is_multiple_of(width))
}

/// Screens the request message of every call of the contract.
pub(crate) type ScreenLayer = CheckLayer<Screen>;

impl ScreenLayer {
    /// `max_message`: the largest request message the services decode; a
    /// larger one is passed on unread, for them to refuse.
    pub(crate) fn new(messages: RequestMessages, max_message: usize) -> Self {
        CheckLayer(Screen {
            messages: Arc::new(messages),
            max_message,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Screen {
    messages: Arc<RequestMessages>,
    max_message: usize,
}

impl tower_util::Check<Body> for Screen {
    fn check(
        &self,
        request: http::Request<Body>,
    ) -> impl Future<Output = Result<http::Request<Body>, tonic::Status>> + Send + 'static {
        let descriptor = is_grpc(&request)
            .then(|| self.messages.of_path(request.uri().path()).cloned())
            .flatten();
        let max_message = self.max_message;
        async move {
            let Some(descriptor) = descriptor else {
                return Ok(request);
            };
            let (parts, body) = request.into_parts();
            let (message, body) = first_message(body, max_message).await;
            if let Some(message) = message
                && !quickly_clean(&descriptor, &message)
                && let Err(refusal) = screen(&descriptor, &message)
            {
                return Err(to_status(refusal));
            }
            Ok(http::Request::from_parts(parts, body))
        }
    }
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// Reads the body until its first message is whole: returns that message
/// (unless it is compressed or larger than `max_message`, or the body ends
/// or fails before it) and a body that replays everything read, then the rest.
async fn first_message(mut body: Body, max_message: usize) -> (Option<Bytes>, Body) {
    let mut read = BytesMut::new();
    let mut trailers = None;
    let mut failure = None;
    let mut rest = true;
    let message = loop {
        if read.len() >= PREFIX_LEN {
            let compressed = read[0] != 0;
            let length = (&read[1..PREFIX_LEN]).get_u32() as usize;
            if compressed || length > max_message {
                break None;
            }
            if read.len() >= PREFIX_LEN + length {
                break Some(Bytes::copy_from_slice(
                    &read[PREFIX_LEN..PREFIX_LEN + length],
                ));
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => read.extend_from_slice(&data),
                Err(frame) => {
                    trailers = Some(frame);
                    rest = false;
                    break None;
                }
            },
            Some(Err(error)) => {
                failure = Some(error);
                rest = false;
                break None;
            }
            None => {
                rest = false;
                break None;
            }
        }
    };
    let replayed = futures::stream::iter(
        [
            Some(Ok(hyper::body::Frame::data(read.freeze()))),
            trailers.map(Ok),
            failure.map(Err),
        ]
        .into_iter()
        .flatten(),
    );
    let body = if rest {
        Body::new(StreamBody::new(replayed.chain(BodyStream::new(body))))
    } else {
        Body::new(StreamBody::new(replayed))
    };
    (message, body)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto;

    fn messages() -> RequestMessages {
        RequestMessages::of_contract().expect("the contract's descriptors")
    }

    fn violations(path: &str, message: impl prost::Message) -> Vec<(String, String)> {
        let messages = messages();
        let descriptor = messages.of_path(path).expect("an RPC of the contract");
        let encoded = message.encode_to_vec();
        let found = match screen(descriptor, &encoded) {
            Ok(()) => Vec::new(),
            Err(DomainError::InvalidArgument(v)) => {
                v.into_iter().map(|v| (v.field, v.description)).collect()
            }
            Err(other) => panic!("{other:?}"),
        };
        // The quick read agrees with the full screen on every case here.
        assert_eq!(quickly_clean(descriptor, &encoded), found.is_empty());
        found
    }

    fn audit_request(actor: String, seconds: i64, nanos: i32) -> Vec<u8> {
        proto::ListAuditEventsRequest {
            actor,
            start_time: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    const AUDIT: &str = "/usermgmt.v1.AuditService/ListAuditEvents";

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Canonical encodings: the quick read passes exactly what the full
        /// screen passes.
        #[test]
        fn the_quick_read_agrees_with_the_full_screen(
            actor in proptest::prelude::any::<String>(),
            seconds in proptest::prelude::any::<i64>(),
            nanos in proptest::prelude::any::<i32>(),
        ) {
            let messages = messages();
            let descriptor = messages.of_path(AUDIT).expect("audit");
            let encoded = audit_request(actor, seconds, nanos);
            proptest::prop_assert_eq!(
                quickly_clean(descriptor, &encoded),
                screen(descriptor, &encoded).is_ok()
            );
        }

        /// Damaged or arbitrary bytes, for every RPC: what the quick read
        /// passes, the full screen (which decodes) passes too.
        #[test]
        fn the_quick_read_passes_nothing_the_full_screen_refuses(
            rpc in 0usize..64,
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let messages = messages();
            let paths = proto::rpc_paths().expect("paths");
            let any_rpc = messages.of_path(&paths[rpc % paths.len()]).expect("an RPC");
            let mut damaged = audit_request("someone".into(), 1, 2);
            let i = at % damaged.len();
            damaged[i] = byte;
            let audit = messages.of_path(AUDIT).expect("audit");
            for (descriptor, candidate) in [(any_rpc, bytes), (audit, damaged)] {
                if quickly_clean(descriptor, &candidate) {
                    proptest::prop_assert!(screen(descriptor, &candidate).is_ok(), "{:?}", candidate);
                }
            }
        }
    }

    fn fields(found: Vec<(String, String)>) -> Vec<String> {
        found.into_iter().map(|(field, _)| field).collect()
    }

    #[test]
    fn every_rpc_of_the_contract_has_its_request_message() {
        let messages = messages();
        for path in proto::rpc_paths().expect("paths") {
            assert!(messages.of_path(&path).is_some(), "{path}");
        }
    }

    #[test]
    fn nul_is_refused_in_every_nested_and_repeated_string() {
        let request = proto::IssuePlaybackTokenRequest {
            scope: Some(proto::PlaybackScope {
                scope: Some(proto::playback_scope::Scope::Streams(proto::StreamList {
                    names: vec!["live".into(), "a\0b".into()],
                })),
            }),
            restrictions: Some(proto::PlaybackRestrictions {
                tag: "\0".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(violations(
                "/usermgmt.v1.PlaybackTokenService/IssuePlaybackToken",
                request
            )),
            ["scope.streams.names[1]", "restrictions.tag"]
        );
        let audit = proto::ListAuditEventsRequest {
            action: "\0".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(violations(
                "/usermgmt.v1.AuditService/ListAuditEvents",
                audit
            )),
            ["action"]
        );
    }

    #[test]
    fn timestamps_and_durations_out_of_range_are_refused() {
        let at = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        let request = proto::IssuePlaybackTokenRequest {
            nbf: at(8_210_266_876_799, 0),
            exp: at(0, -1),
            ..Default::default()
        };
        assert_eq!(
            fields(violations(
                "/usermgmt.v1.PlaybackTokenService/IssuePlaybackToken",
                request
            )),
            ["nbf", "exp"]
        );
        let invite = proto::CreateInviteRequest {
            ttl: Some(prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(violations("/usermgmt.v1.UserService/CreateInvite", invite)),
            ["ttl"]
        );
        let fine = proto::ListAuditEventsRequest {
            start_time: at(0, 0),
            end_time: at(253_402_300_799, 999_999_999),
            ..Default::default()
        };
        assert!(violations("/usermgmt.v1.AuditService/ListAuditEvents", fine).is_empty());
    }

    #[test]
    fn many_bad_entries_give_a_bounded_answer() {
        let request = proto::AuthorizeBatchRequest {
            permissions: vec!["\0".into(); 5000],
            ..Default::default()
        };
        let found = violations("/usermgmt.v1.AuthService/AuthorizeBatch", request);
        assert_eq!(found.len(), MAX_VIOLATIONS);
    }

    #[test]
    fn bytes_that_encode_no_request_are_refused() {
        let messages = messages();
        let descriptor = messages
            .of_path("/usermgmt.v1.AuthService/Login")
            .expect("login");
        // Field 1 (email) as a string of invalid UTF-8, then a truncated field.
        assert!(screen(descriptor, &[0x0a, 0x02, 0xff, 0xfe]).is_err());
        assert!(screen(descriptor, &[0x0a, 0x05, b'a']).is_err());
        assert!(screen(descriptor, &[]).is_ok());
    }

    #[tokio::test]
    async fn the_body_is_replayed_whole() {
        let message = proto::LoginRequest {
            email: "a@example.com".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, tonic::Status>> = framed
            .chunks(3)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = Body::new(StreamBody::new(futures::stream::iter(chunks)));
        let (first, replayed) = first_message(body, 1024).await;
        assert_eq!(first.as_deref(), Some(message.as_slice()));
        let replayed = replayed.collect().await.expect("body").to_bytes();
        assert_eq!(replayed.as_ref(), framed.as_slice());

        // Too large to read: passed on untouched.
        let body = Body::new(StreamBody::new(futures::stream::iter(vec![Ok::<
            _,
            tonic::Status,
        >(
            hyper::body::Frame::data(Bytes::from(framed.clone())),
        )])));
        let (first, replayed) = first_message(body, 4).await;
        assert!(first.is_none());
        let replayed = replayed.collect().await.expect("body").to_bytes();
        assert_eq!(replayed.as_ref(), framed.as_slice());
    }
}
