//! The contract by its descriptors: every RPC with its request message, the
//! fields of a request at any depth, and calls of any RPC with any bytes.

use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MessageDescriptor, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Every RPC of the contract: its path and its request message.
pub fn rpcs() -> Vec<(String, MessageDescriptor)> {
    let pool = DescriptorPool::decode(usermgmt::proto::FILE_DESCRIPTOR_SET)
        .expect("the contract's descriptors decode");
    pool.services()
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
        .collect()
}

/// A field of a request message at any depth: the RPC, its request message
/// and the fields that lead to it.
#[derive(Debug, Clone)]
pub struct FieldPath {
    pub rpc: String,
    pub request: MessageDescriptor,
    pub fields: Vec<FieldDescriptor>,
}

impl FieldPath {
    fn leaf(&self) -> &FieldDescriptor {
        self.fields.last().expect("a path has a field")
    }

    /// `Message.field`, named by the message that declares the field.
    pub fn declared_as(&self) -> String {
        let leaf = self.leaf();
        format!("{}.{}", leaf.parent_message().name(), leaf.name())
    }

    /// The field as a violation names it: `scope.streams.names[0]` (a
    /// repeated field holds one entry).
    pub fn violation(&self) -> String {
        self.fields
            .iter()
            .map(|field| {
                if field.is_list() {
                    format!("{}[0]", field.name())
                } else {
                    field.name().to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The request with only this field set to `value` (in one entry, where
    /// a field on the way is repeated).
    pub fn request_with(&self, value: Value) -> DynamicMessage {
        fn build(
            message: &MessageDescriptor,
            fields: &[FieldDescriptor],
            leaf: Value,
        ) -> DynamicMessage {
            let mut built = DynamicMessage::new(message.clone());
            let field = &fields[0];
            let value = match fields.get(1..) {
                Some(rest) if !rest.is_empty() => {
                    let inner = field.kind().as_message().cloned().expect("a message field");
                    Value::Message(build(&inner, rest, leaf))
                }
                _ => leaf,
            };
            let value = if field.is_list() {
                Value::List(vec![value])
            } else {
                value
            };
            built.set_field(field, value);
            built
        }
        build(&self.request, &self.fields, value)
    }
}

/// The fields of every request for which `wanted` holds, at any depth (not
/// inside the well-known time types).
pub fn request_fields(wanted: impl Fn(&FieldDescriptor) -> bool) -> Vec<FieldPath> {
    fn visit(
        message: &MessageDescriptor,
        path: &mut Vec<FieldDescriptor>,
        wanted: &dyn Fn(&FieldDescriptor) -> bool,
        found: &mut Vec<Vec<FieldDescriptor>>,
    ) {
        for field in message.fields() {
            path.push(field.clone());
            if wanted(&field) {
                found.push(path.clone());
            } else if let Some(inner) = field.kind().as_message()
                && !is_time(inner)
                && path.len() < 8
            {
                visit(inner, path, wanted, found);
            }
            path.pop();
        }
    }
    let mut paths = Vec::new();
    for (rpc, request) in rpcs() {
        let mut found = Vec::new();
        visit(&request, &mut Vec::new(), &wanted, &mut found);
        paths.extend(found.into_iter().map(|fields| FieldPath {
            rpc: rpc.clone(),
            request: request.clone(),
            fields,
        }));
    }
    paths
}

/// Whether `message` is `google.protobuf.Timestamp` or `Duration`.
pub fn is_time(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp" | "google.protobuf.Duration"
    )
}

/// Whether `field` is text (singular or repeated).
pub fn is_text(field: &FieldDescriptor) -> bool {
    field.kind() == prost_reflect::Kind::String
}

/// Passes messages through as bytes, so that any bytes can be sent to any RPC.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut item = vec![0; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut item);
        Ok(Some(item))
    }
}

/// Calls the RPC at `path` with `message` as its request's bytes and the
/// given metadata; returns the response's bytes.
pub async fn call_raw(
    channel: &Channel,
    path: &str,
    message: Vec<u8>,
    metadata: &[(&'static str, String)],
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(format!("the channel is not ready: {error}")))?;
    let mut request = Request::new(message);
    for (name, value) in metadata {
        let value: MetadataValue<_> = value.parse().expect("a metadata value");
        request.metadata_mut().insert(*name, value);
    }
    let streaming = is_server_streaming(path);
    let path = http::uri::PathAndQuery::try_from(path).expect("an RPC path");
    if streaming {
        // A watch that was accepted may never end: its first message (or
        // its error) is the answer.
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        return stream.message().await.map(Option::unwrap_or_default);
    }
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Whether the RPC at `path` answers with a stream.
fn is_server_streaming(path: &str) -> bool {
    let pool = DescriptorPool::decode(usermgmt::proto::FILE_DESCRIPTOR_SET)
        .expect("the contract's descriptors decode");
    pool.services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .any(|method| {
            method.is_server_streaming()
                && path == format!("/{}/{}", method.parent_service().full_name(), method.name())
        })
}
