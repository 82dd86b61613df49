// What a failed call means for the person at the page: the gRPC code, the
// google.rpc details the service attaches (ErrorInfo's reason, BadRequest's
// field violations, RetryInfo's delay) and a sentence to show.
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

export interface FieldViolation {
  field: string;
  description: string;
}

export interface CallFailure {
  code: Code;
  reason: string;
  message: string;
  fieldViolations: FieldViolation[];
  retryAfterSeconds: number | undefined;
}

const ERROR_INFO = "google.rpc.ErrorInfo";
const BAD_REQUEST = "google.rpc.BadRequest";
const RETRY_INFO = "google.rpc.RetryInfo";

/** The failure `error` describes; anything that is not a call's error is UNKNOWN. */
export function failureOf(error: unknown): CallFailure {
  const connectError = ConnectError.from(error);
  const failure: CallFailure = {
    code: connectError.code,
    reason: "",
    message: connectError.rawMessage,
    fieldViolations: [],
    retryAfterSeconds: undefined,
  };
  for (const detail of connectError.details) {
    if (!("type" in detail) || !(detail.value instanceof Uint8Array)) continue;
    const bytes = detail.value;
    if (detail.type === ERROR_INFO) failure.reason = decodeErrorInfoReason(bytes);
    if (detail.type === BAD_REQUEST) failure.fieldViolations = decodeBadRequest(bytes);
    if (detail.type === RETRY_INFO) failure.retryAfterSeconds = decodeRetryInfo(bytes);
  }
  return failure;
}

/** ErrorInfo { string reason = 1; string domain = 2; map metadata = 3; } */
function decodeErrorInfoReason(bytes: Uint8Array): string {
  let reason = "";
  eachField(bytes, (field, reader, wireType) => {
    if (field === 1) reason = reader.string();
    else reader.skip(wireType);
  });
  return reason;
}

/** BadRequest { repeated FieldViolation field_violations = 1; } */
function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = [];
  eachField(bytes, (field, reader, wireType) => {
    if (field !== 1) return reader.skip(wireType);
    const violation = { field: "", description: "" };
    eachField(reader.bytes(), (inner, innerReader, innerWireType) => {
      if (inner === 1) violation.field = innerReader.string();
      else if (inner === 2) violation.description = innerReader.string();
      else innerReader.skip(innerWireType);
    });
    violations.push(violation);
  });
  return violations;
}

/** RetryInfo { google.protobuf.Duration retry_delay = 1; } */
function decodeRetryInfo(bytes: Uint8Array): number | undefined {
  let seconds: number | undefined;
  eachField(bytes, (field, reader, wireType) => {
    if (field !== 1) return reader.skip(wireType);
    seconds = 0;
    eachField(reader.bytes(), (inner, innerReader, innerWireType) => {
      if (inner === 1) seconds = Number(innerReader.int64());
      else innerReader.skip(innerWireType);
    });
  });
  return seconds;
}

function eachField(
  bytes: Uint8Array,
  visit: (field: number, reader: BinaryReader, wireType: number) => unknown,
): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    visit(field, reader, wireType);
  }
}

/** Reasons that mean the person's session can no longer be used. */
const SIGNED_OUT_MESSAGES: Record<string, string> = {
  TOKEN_REVOKED:
    "Your access was revoked: an administrator changed your role or renewed your token key, or your password changed. Sign in again.",
  TOKEN_EXPIRED: "Your session expired. Sign in again.",
  TOKEN_INVALID: "Your session is not valid any more. Sign in again.",
  REFRESH_TOKEN_INVALID: "Your session ended. Sign in again.",
  REFRESH_TOKEN_REUSED:
    "Your session was ended because its refresh token was used twice (another tab or a copy). Sign in again.",
};

/** The sentence the sign-in page shows after `failure` ended the session. */
export function signedOutMessage(failure: CallFailure): string {
  return (
    SIGNED_OUT_MESSAGES[failure.reason] ??
    `You were signed out: ${failure.message || "your credentials are no longer valid"}. Sign in again.`
  );
}

/** A sentence for an error shown beside the action that failed. */
export function describeFailure(failure: CallFailure): string {
  if (failure.fieldViolations.length > 0) {
    return failure.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ");
  }
  if (failure.code === Code.ResourceExhausted && failure.retryAfterSeconds !== undefined) {
    return `${failure.message}. Try again in ${failure.retryAfterSeconds} s.`;
  }
  if (failure.code === Code.Unavailable) return "The service is unavailable. Try again.";
  return failure.message || Code[failure.code];
}
