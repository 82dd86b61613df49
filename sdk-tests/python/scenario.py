"""The Python SDK test: a client generated from proto/ by grpcio-tools runs
a nanoAdmin's everyday scenario against a running usermgmt.

Usage: scenario.py ADDRESS (host:port). The environment gives USERMGMT_BIN
(the usermgmt binary, for `usermgmt bootstrap`) and DATABASE_URL (the
server's database). Prints one line per step; exits non-zero on the first
failure.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated"))

import grpc  # noqa: E402

from usermgmt.v1 import audit_service_pb2, audit_service_pb2_grpc  # noqa: E402
from usermgmt.v1 import auth_service_pb2, auth_service_pb2_grpc  # noqa: E402
from usermgmt.v1 import change_service_pb2, change_service_pb2_grpc  # noqa: E402
from usermgmt.v1 import resources_pb2  # noqa: E402
from usermgmt.v1 import user_service_pb2, user_service_pb2_grpc  # noqa: E402

ADMIN_EMAIL = "admin@python.example.com"
ADMIN_PASSWORD = "python admin password"
TIMEOUT = 10

passed = 0


def step(name):
    global passed
    passed += 1
    print(f"python sdk: ok {passed} - {name}", flush=True)


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def expect_code(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        if error.code() != code:
            raise AssertionError(f"expected {code}, got {error.code()}: {error.details()}")
        return error
    raise AssertionError(f"expected {code}, but the call succeeded")


def change_sequence(call):
    """The sequence of the change a write committed, from its answer's metadata."""
    metadata = dict(call.initial_metadata())
    return int(metadata["x-usermgmt-change-sequence"])


class Cursor:
    """Where a client stands in the feed: the last sequence it has everything
    up to, and the token to resume after it. Checks density on every change."""

    def __init__(self):
        self.last = None
        self.token = None

    def take(self, message):
        """Applies one message of a watch; returns the change, if it is one."""
        kind = message.WhichOneof("event")
        if kind == "heartbeat":
            beat = message.heartbeat
            assert self.last is None or beat.sequence == self.last, (self.last, beat)
            self.last, self.token = beat.sequence, beat.resume_token
            return None
        if kind == "change":
            change = message.change
            assert self.last is not None, "a change before the watch said where it stands"
            assert change.sequence == self.last + 1, f"a hole: {self.last} then {change.sequence}"
            self.last, self.token = change.sequence, change.resume_token
            return change
        raise AssertionError(f"unexpected message {kind}")


def watch_until(stream, cursor, sequence):
    """Reads `stream` until it delivered the change `sequence`; returns it."""
    for message in stream:
        change = cursor.take(message)
        if change is not None and change.sequence == sequence:
            return change
    raise AssertionError(f"the stream ended before change {sequence}")


def watch_across_reconnect(channel, admin):
    """WatchChanges across a reconnect: watch, write, receive it, cancel,
    write again, resume from the last token: exactly the next sequence."""
    changes = change_service_pb2_grpc.ChangeServiceStub(channel)
    users = user_service_pb2_grpc.UserServiceStub(channel)
    cursor = Cursor()
    every_second = change_service_pb2.WatchChangesRequest(
        start=change_service_pb2.CHANGE_START_NOW
    )
    every_second.heartbeat_interval.FromSeconds(1)

    stream = changes.WatchChanges(every_second, metadata=admin, timeout=30)
    # The first heartbeat: the watch stands at the head, so the next write
    # is the next change.
    cursor.take(next(stream))
    invite, call = users.CreateInvite.with_call(
        user_service_pb2.CreateInviteRequest(
            email="watched@python.example.com", role=resources_pb2.ROLE_NANO_USER
        ),
        metadata=admin,
        timeout=TIMEOUT,
    )
    created = change_sequence(call)
    change = watch_until(stream, cursor, created)
    assert [(t.action, t.target_id) for t in change.targets] == [
        ("invite.create", invite.invite.id)
    ], change
    stream.cancel()
    expect_code(grpc.StatusCode.CANCELLED, next, stream)
    step("WatchChanges delivered a write's change, in sequence; the client hung up")

    _, call = users.RevokeInvite.with_call(
        user_service_pb2.RevokeInviteRequest(invite_id=invite.invite.id),
        metadata=admin,
        timeout=TIMEOUT,
    )
    revoked = change_sequence(call)
    assert revoked == created + 1, (created, revoked)
    resumed = change_service_pb2.WatchChangesRequest(resume_token=cursor.token)
    resumed.heartbeat_interval.FromSeconds(1)
    stream = changes.WatchChanges(resumed, metadata=admin, timeout=30)
    change = cursor.take(next(stream))
    assert change is not None and change.sequence == revoked, change
    assert [(t.action, t.target_id) for t in change.targets] == [
        ("invite.revoke", invite.invite.id)
    ], change
    stream.cancel()
    step("resumed from the last token: exactly the next sequence, the change made meanwhile")


def main():
    address = sys.argv[1]
    binary = os.environ["USERMGMT_BIN"]

    created = subprocess.run(
        [binary, "bootstrap", "--organisation", "Python SDK", "--email", ADMIN_EMAIL],
        env={**os.environ, "USERMGMT_BOOTSTRAP_PASSWORD": ADMIN_PASSWORD, "USERMGMT_LOG": "warn"},
        check=True,
        capture_output=True,
        text=True,
    )
    org = json.loads(created.stdout)
    org_id = org["organisation_id"]
    assert org["user_id"] and org["api_key"], org
    step("usermgmt bootstrap printed the organisation as JSON")

    with grpc.insecure_channel(address) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        users = user_service_pb2_grpc.UserServiceStub(channel)
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)

        login = auth.Login(
            auth_service_pb2.LoginRequest(
                email=ADMIN_EMAIL, password=ADMIN_PASSWORD, organisation_id=org_id
            ),
            timeout=TIMEOUT,
        )
        admin = bearer(login.access_token)
        assert login.user_id == org["user_id"], login
        whoami = auth.WhoAmI(auth_service_pb2.WhoAmIRequest(), metadata=admin, timeout=TIMEOUT)
        assert whoami.role == resources_pb2.ROLE_NANO_ADMIN, whoami
        step("Login, then WhoAmI says nanoAdmin")

        invite = users.CreateInvite(
            user_service_pb2.CreateInviteRequest(
                email="invitee@python.example.com", role=resources_pb2.ROLE_NANO_USER
            ),
            metadata=admin,
            timeout=TIMEOUT,
        )
        assert invite.invite_token and invite.invite.id, invite
        step("CreateInvite returned the invite token")

        accepted = auth.AcceptInvite(
            auth_service_pb2.AcceptInviteRequest(
                invite_token=invite.invite_token, password="invitee password 1"
            ),
            timeout=TIMEOUT,
        )
        assert accepted.organisation_id == org_id, accepted
        invitee_id = accepted.user_id
        invitee = bearer(accepted.access_token)
        whoami = auth.WhoAmI(auth_service_pb2.WhoAmIRequest(), metadata=invitee, timeout=TIMEOUT)
        assert whoami.role == resources_pb2.ROLE_NANO_USER, whoami
        step("AcceptInvite without credentials; the invitee is a nanoUser")

        etag = users.GetUser(
            user_service_pb2.GetUserRequest(user_id=invitee_id), metadata=admin, timeout=TIMEOUT
        ).user.etag
        updated = users.UpdateUserRole(
            user_service_pb2.UpdateUserRoleRequest(
                user_id=invitee_id, role=resources_pb2.ROLE_NANO_READ_ONLY, etag=etag
            ),
            metadata=admin + (("x-request-id", "python-sdk-demote"),),
            timeout=TIMEOUT,
        )
        assert updated.changed and updated.user.role == resources_pb2.ROLE_NANO_READ_ONLY, updated
        step("UpdateUserRole with the etag demoted the invitee")

        expect_code(
            grpc.StatusCode.UNAUTHENTICATED,
            auth.WhoAmI,
            auth_service_pb2.WhoAmIRequest(),
            metadata=invitee,
            timeout=TIMEOUT,
        )
        step("the invitee's old token is rejected with UNAUTHENTICATED")

        first = users.DeleteUser(
            user_service_pb2.DeleteUserRequest(user_id=invitee_id), metadata=admin, timeout=TIMEOUT
        )
        assert first.WhichOneof("outcome") == "confirmation_required", first
        confirmation = first.confirmation_required
        assert confirmation.warning and confirmation.user_id == invitee_id, confirmation
        step("DeleteUser, first step: a confirmation with its warning")

        second = users.DeleteUser(
            user_service_pb2.DeleteUserRequest(
                user_id=invitee_id, confirmation_token=confirmation.confirmation_token
            ),
            metadata=admin,
            timeout=TIMEOUT,
        )
        assert second.WhichOneof("outcome") == "deleted", second
        assert second.deleted.id == invitee_id, second
        expect_code(
            grpc.StatusCode.NOT_FOUND,
            users.GetUser,
            user_service_pb2.GetUserRequest(user_id=invitee_id),
            metadata=admin,
            timeout=TIMEOUT,
        )
        step("DeleteUser, second step: the user is gone")

        events = audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(page_size=50), metadata=admin, timeout=TIMEOUT
        ).events
        actions = [event.action for event in events]
        for action in ("invite.create", "invite.accept", "user.update_role", "user.delete"):
            assert action in actions, (action, actions)
        demote = next(event for event in events if event.action == "user.update_role")
        assert demote.request_id == "python-sdk-demote", demote
        step("ListAuditEvents lists every change, with the request id")

        watch_across_reconnect(channel, admin)

    print(f"python sdk: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
