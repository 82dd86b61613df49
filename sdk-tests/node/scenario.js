// The Node SDK test: @grpc/grpc-js with the contract loaded straight from
// proto/ by @grpc/proto-loader runs a nanoAdmin's everyday scenario against a
// running usermgmt.
//
// Usage: node scenario.js ADDRESS (host:port). The environment gives
// USERMGMT_BIN (the usermgmt binary, for `usermgmt bootstrap`) and
// DATABASE_URL (the server's database). Prints one line per step; exits
// non-zero on the first failure.
"use strict";

const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const path = require("node:path");
const { promisify } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const ADMIN_EMAIL = "admin@node.example.com";
const ADMIN_PASSWORD = "node admin password";
const DEADLINE_MS = 10_000;

let passed = 0;
function step(name) {
  passed += 1;
  console.log(`node sdk: ok ${passed} - ${name}`);
}

function load() {
  const protoDir = path.resolve(__dirname, "..", "..", "proto");
  const definition = protoLoader.loadSync(
    [
      "usermgmt/v1/auth_service.proto",
      "usermgmt/v1/user_service.proto",
      "usermgmt/v1/audit_service.proto",
      "usermgmt/v1/change_service.proto",
    ],
    // Plain JS values: enums as names, 64-bit as strings, oneofs named.
    { includeDirs: [protoDir], keepCase: true, enums: String, longs: String, defaults: true, oneofs: true },
  );
  return grpc.loadPackageDefinition(definition).usermgmt.v1;
}

// A client whose methods return promises: call(method, request, token?, headers?).
function promised(Client, address) {
  const client = new Client(address, grpc.credentials.createInsecure());
  return (method, request, token, headers = {}) => {
    const metadata = new grpc.Metadata();
    if (token) metadata.set("authorization", `Bearer ${token}`);
    for (const [name, value] of Object.entries(headers)) metadata.set(name, value);
    const deadline = new Date(Date.now() + DEADLINE_MS);
    return promisify(client[method].bind(client))(request, metadata, { deadline });
  };
}

function bearer(token) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

// A write, with the sequence of the change it committed (from its answer's
// metadata): { response, sequence }.
function writeWithChange(client, method, request, token) {
  return new Promise((resolve, reject) => {
    let sequence;
    const deadline = new Date(Date.now() + DEADLINE_MS);
    const call = client[method](request, bearer(token), { deadline }, (error, response) =>
      error ? reject(error) : resolve({ response, sequence }),
    );
    call.on("metadata", (metadata) => {
      sequence = Number(metadata.get("x-usermgmt-change-sequence")[0]);
    });
  });
}

// Where a client stands in the feed: the last sequence it has everything up
// to, and the token to resume after it. Checks density on every change.
class Cursor {
  constructor() {
    this.last = undefined;
    this.token = undefined;
  }

  // Applies one message of a watch; returns the change, if it is one.
  take(message) {
    if (message.event === "heartbeat") {
      const beat = message.heartbeat;
      if (this.last !== undefined) assert.equal(Number(beat.sequence), this.last);
      this.last = Number(beat.sequence);
      this.token = beat.resume_token;
      return undefined;
    }
    assert.equal(message.event, "change", `unexpected message ${message.event}`);
    const { change } = message;
    assert.ok(this.last !== undefined, "a change before the watch said where it stands");
    assert.equal(Number(change.sequence), this.last + 1, `a hole: ${this.last} then ${change.sequence}`);
    this.last = Number(change.sequence);
    this.token = change.resume_token;
    return change;
  }
}

// The next message of a watch (its async iterator), within the deadline.
async function nextMessage(messages) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("no message within the deadline")), DEADLINE_MS);
  });
  try {
    const { value, done } = await Promise.race([messages.next(), timeout]);
    assert.ok(!done, "the stream ended");
    return value;
  } finally {
    clearTimeout(timer);
  }
}

// WatchChanges across a reconnect: watch, write, receive it, cancel, write
// again, resume from the last token: exactly the next sequence.
async function watchAcrossReconnect(v1, address, admin) {
  const changes = new v1.ChangeService(address, grpc.credentials.createInsecure());
  const users = new v1.UserService(address, grpc.credentials.createInsecure());
  const cursor = new Cursor();
  const everySecond = { seconds: "1", nanos: 0 };

  let call = changes.WatchChanges({ start: "CHANGE_START_NOW", heartbeat_interval: everySecond }, bearer(admin));
  let messages = call[Symbol.asyncIterator]();
  // The first heartbeat: the watch stands at the head, so the next write is
  // the next change.
  cursor.take(await nextMessage(messages));
  const created = await writeWithChange(
    users,
    "CreateInvite",
    { email: "watched@node.example.com", role: "ROLE_NANO_USER" },
    admin,
  );
  const inviteId = created.response.invite.id;
  let change;
  while (!change || Number(change.sequence) !== created.sequence) {
    change = cursor.take(await nextMessage(messages));
  }
  assert.deepEqual(
    change.targets.map((target) => [target.action, target.target_id]),
    [["invite.create", inviteId]],
  );
  call.cancel();
  await expectCode(grpc.status.CANCELLED, messages.next());
  step("WatchChanges delivered a write's change, in sequence; the client hung up");

  const revoked = await writeWithChange(users, "RevokeInvite", { invite_id: inviteId }, admin);
  assert.equal(revoked.sequence, created.sequence + 1);
  call = changes.WatchChanges({ resume_token: cursor.token, heartbeat_interval: everySecond }, bearer(admin));
  messages = call[Symbol.asyncIterator]();
  change = cursor.take(await nextMessage(messages));
  assert.ok(change, "the first message after resuming is the change made meanwhile");
  assert.equal(Number(change.sequence), revoked.sequence);
  assert.deepEqual(
    change.targets.map((target) => [target.action, target.target_id]),
    [["invite.revoke", inviteId]],
  );
  call.cancel();
  step("resumed from the last token: exactly the next sequence, the change made meanwhile");
}

async function expectCode(code, promise) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.code, code, `expected status ${code}, got ${error.code}: ${error.details}`);
    return error;
  }
  assert.fail(`expected status ${code}, but the call succeeded`);
}

async function main() {
  const address = process.argv[2];
  const binary = process.env.USERMGMT_BIN;
  assert.ok(address && binary, "usage: USERMGMT_BIN=... node scenario.js HOST:PORT");

  const output = execFileSync(binary, ["bootstrap", "--organisation", "Node SDK", "--email", ADMIN_EMAIL], {
    env: { ...process.env, USERMGMT_BOOTSTRAP_PASSWORD: ADMIN_PASSWORD, USERMGMT_LOG: "warn" },
    encoding: "utf8",
  });
  const org = JSON.parse(output);
  assert.ok(org.organisation_id && org.user_id && org.api_key, output);
  step("usermgmt bootstrap printed the organisation as JSON");

  const v1 = load();
  const auth = promised(v1.AuthService, address);
  const users = promised(v1.UserService, address);
  const audit = promised(v1.AuditService, address);

  const login = await auth("Login", {
    email: ADMIN_EMAIL,
    password: ADMIN_PASSWORD,
    organisation_id: org.organisation_id,
  });
  const admin = login.access_token;
  assert.equal(login.user_id, org.user_id);
  assert.equal((await auth("WhoAmI", {}, admin)).role, "ROLE_NANO_ADMIN");
  step("Login, then WhoAmI says nanoAdmin");

  const invite = await users("CreateInvite", { email: "invitee@node.example.com", role: "ROLE_NANO_USER" }, admin);
  assert.ok(invite.invite_token && invite.invite.id);
  step("CreateInvite returned the invite token");

  const accepted = await auth("AcceptInvite", { invite_token: invite.invite_token, password: "invitee password 1" });
  assert.equal(accepted.organisation_id, org.organisation_id);
  const inviteeId = accepted.user_id;
  const invitee = accepted.access_token;
  assert.equal((await auth("WhoAmI", {}, invitee)).role, "ROLE_NANO_USER");
  step("AcceptInvite without credentials; the invitee is a nanoUser");

  const { etag } = (await users("GetUser", { user_id: inviteeId }, admin)).user;
  const updated = await users(
    "UpdateUserRole",
    { user_id: inviteeId, role: "ROLE_NANO_READ_ONLY", etag },
    admin,
    { "x-request-id": "node-sdk-demote" },
  );
  assert.ok(updated.changed);
  assert.equal(updated.user.role, "ROLE_NANO_READ_ONLY");
  step("UpdateUserRole with the etag demoted the invitee");

  await expectCode(grpc.status.UNAUTHENTICATED, auth("WhoAmI", {}, invitee));
  step("the invitee's old token is rejected with UNAUTHENTICATED");

  const first = await users("DeleteUser", { user_id: inviteeId }, admin);
  assert.equal(first.outcome, "confirmation_required");
  const confirmation = first.confirmation_required;
  assert.ok(confirmation.warning);
  assert.equal(confirmation.user_id, inviteeId);
  step("DeleteUser, first step: a confirmation with its warning");

  const second = await users(
    "DeleteUser",
    { user_id: inviteeId, confirmation_token: confirmation.confirmation_token },
    admin,
  );
  assert.equal(second.outcome, "deleted");
  assert.equal(second.deleted.id, inviteeId);
  await expectCode(grpc.status.NOT_FOUND, users("GetUser", { user_id: inviteeId }, admin));
  step("DeleteUser, second step: the user is gone");

  const { events } = await audit("ListAuditEvents", { page_size: 50 }, admin);
  const actions = events.map((event) => event.action);
  for (const action of ["invite.create", "invite.accept", "user.update_role", "user.delete"]) {
    assert.ok(actions.includes(action), `${action} not in ${actions}`);
  }
  const demote = events.find((event) => event.action === "user.update_role");
  assert.equal(demote.request_id, "node-sdk-demote");
  step("ListAuditEvents lists every change, with the request id");

  await watchAcrossReconnect(v1, address, admin);

  console.log(`node sdk: ${passed} passed, 0 failed`);
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`node sdk: FAILED after ${passed} steps: ${error.stack || error}`);
    process.exit(1);
  },
);
