// The actions of one expanded user, as the product's page has them: Edit
// role, Delete and Renew Token, plus Suspend / Reactivate. Only what the
// caller's role holds is offered (the service refuses the rest anyway).
// Delete, Renew and Suspend are double-confirmed with the service's own
// warning; Edit role and Reactivate carry the user's etag, and a change
// someone made meanwhile is answered by reading the user again, never by
// overwriting it.
import { useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { api } from "../api";
import { describeFailure, failureOf } from "../errors";
import { roleName } from "../format";
import type {
  Confirmation,
  DeleteUserResponse,
  RenewTokenKeyResponse,
  SuspendUserResponse,
} from "../gen/usermgmt/v1/user_service_pb";
import { UserState, type User } from "../gen/usermgmt/v1/resources_pb";
import { can, guarded } from "../session";
import { Dialog } from "../ui/Dialog";
import { DoubleConfirm, type Consequences } from "../ui/DoubleConfirm";
import { ErrorText, notify } from "../ui/Notice";
import { RoleDialog, STALE_MESSAGE, type RoleChange } from "../ui/RoleDialog";

export interface UserActionsProps {
  user: User;
  /** The user after a change made here (or reloaded after a stale etag). */
  onChanged: (user: User) => void;
  /** The user was deleted. */
  onDeleted: (userId: string) => void;
}

type Action = "role" | "delete" | "renew" | "suspend" | "reactivate";

export function UserActions({ user, onChanged, onDeleted }: UserActionsProps) {
  const [open, setOpen] = useState<Action | undefined>(undefined);
  const offers = {
    role: can("users.update_role"),
    delete: can("users.delete"),
    renew: can("users.renew_token"),
    suspend: can("users.suspend"),
  };
  if (!offers.role && !offers.delete && !offers.renew && !offers.suspend) {
    return <p class="muted user-actions-none">Your role may see this user but not change it.</p>;
  }
  const suspended = user.state === UserState.SUSPENDED;
  const close = () => setOpen(undefined);

  /** Reads the user as it is now, after a stale etag; undefined when it was deleted meanwhile. */
  async function reload(): Promise<User | undefined> {
    try {
      const fresh = (await guarded(() => api.users.getUser({ userId: user.id }))).user;
      if (fresh === undefined) throw new Error("GetUser answered without the user");
      onChanged(fresh);
      return fresh;
    } catch (caught) {
      if (failureOf(caught).code !== Code.NotFound) throw caught;
      close();
      notify(`Someone deleted ${user.email} meanwhile.`);
      onDeleted(user.id);
      return undefined;
    }
  }

  function done(text: string, changed: User): void {
    close();
    notify(text);
    onChanged(changed);
  }

  return (
    <div class="user-actions" role="group" aria-label={`Actions for ${user.email}`}>
      {offers.role && (
        <button type="button" class="button" onClick={() => setOpen("role")}>
          Edit role
        </button>
      )}
      {offers.renew && (
        <button type="button" class="button" onClick={() => setOpen("renew")}>
          Renew token
        </button>
      )}
      {offers.suspend && !suspended && (
        <button type="button" class="button" onClick={() => setOpen("suspend")}>
          Suspend
        </button>
      )}
      {offers.suspend && suspended && (
        <button type="button" class="button" onClick={() => setOpen("reactivate")}>
          Reactivate
        </button>
      )}
      {offers.delete && (
        <button type="button" class="button button-danger" onClick={() => setOpen("delete")}>
          Delete
        </button>
      )}
      {open === "role" && (
        <RoleDialog
          user={user}
          reload={reload}
          onClose={close}
          onChanged={(change) => done(roleChangedText(change), change.user)}
        />
      )}
      {open === "delete" && (
        <DoubleConfirm
          title={`Delete ${user.email}`}
          intro={`Delete ${user.email}? The service first says what deleting changes; nothing happens until you confirm a second time.`}
          actionLabel="Delete user"
          step={async (confirmationToken) => {
            const answer = await api.users.deleteUser({ userId: user.id, confirmationToken });
            return stepOutcome(answer.outcome);
          }}
          onDone={() => {
            close();
            notify(`${user.email} was deleted.`);
            onDeleted(user.id);
          }}
          onClose={close}
        />
      )}
      {open === "renew" && (
        <DoubleConfirm
          title={`Renew the token of ${user.email}`}
          intro={`Renew the tokenKey of ${user.email}? The service first says what renewing changes; nothing happens until you confirm a second time.`}
          actionLabel="Renew token"
          step={async (confirmationToken) => {
            const answer = await api.users.renewTokenKey({ userId: user.id, confirmationToken });
            return stepOutcome(answer.outcome);
          }}
          onDone={(renewed) =>
            done(`The tokenKey of ${user.email} was renewed; its fingerprint is now ${renewed.tokenKeyFingerprint}.`, renewed)
          }
          onClose={close}
        />
      )}
      {open === "suspend" && (
        <DoubleConfirm
          title={`Suspend ${user.email}`}
          intro={`Suspend ${user.email}? The service first says what suspending changes; nothing happens until you confirm a second time.`}
          actionLabel="Suspend user"
          step={async (confirmationToken) => {
            const answer = await api.users.suspendUser({ userId: user.id, confirmationToken });
            return stepOutcome(answer.outcome);
          }}
          onDone={(suspendedUser) =>
            done(`${user.email} is suspended: their sessions and tokens stopped working.`, suspendedUser)
          }
          onClose={close}
        />
      )}
      {open === "reactivate" && (
        <ReactivateDialog
          user={user}
          reload={reload}
          onClose={close}
          onDone={(active) => done(`${active.email} is active again and can sign in.`, active)}
        />
      )}
    </div>
  );
}

type Outcome = DeleteUserResponse["outcome"] | RenewTokenKeyResponse["outcome"] | SuspendUserResponse["outcome"];

/** A double-confirmed call's answer, in DoubleConfirm's terms. */
function stepOutcome(outcome: Outcome): { consequences?: Consequences; done?: User } {
  if (outcome.case === undefined) throw new Error("The service answered without an outcome");
  if (outcome.case === "confirmationRequired") return { consequences: consequencesOf(outcome.value) };
  return { done: outcome.value };
}

/** The service's warning, with its counts as a list. */
function consequencesOf(confirmation: Confirmation): Consequences {
  const facts: string[] = [];
  const invites = confirmation.pendingInvites;
  if (invites === 1) facts.push("1 pending invite they created is revoked");
  if (invites > 1) facts.push(`${invites} pending invites they created are revoked`);
  if (confirmation.expiresAt !== undefined) {
    const time = timestampDate(confirmation.expiresAt).toISOString().slice(11, 19);
    facts.push(`Confirm before ${time} UTC; after that, start again`);
  }
  return { token: confirmation.confirmationToken, warning: confirmation.warning, facts };
}

function roleChangedText({ user, revokedInvites }: RoleChange): string {
  const invites =
    revokedInvites === 0
      ? "no pending invites were revoked"
      : revokedInvites === 1
        ? "1 pending invite they created was revoked"
        : `${revokedInvites} pending invites they created were revoked`;
  return `${user.email} is now ${roleName(user.role)}: their tokens and sessions stopped working; ${invites}.`;
}

interface ReactivateDialogProps {
  user: User;
  reload: () => Promise<User | undefined>;
  onDone: (user: User) => void;
  onClose: () => void;
}

/** Reactivation takes nothing away, so one confirmation is enough. */
function ReactivateDialog({ user, reload, onDone, onClose }: ReactivateDialogProps) {
  const [current, setCurrent] = useState(user);
  const [stale, setStale] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const stillSuspended = current.state === UserState.SUSPENDED;

  async function reactivate(): Promise<void> {
    setBusy(true);
    setError("");
    try {
      const answer = await guarded(() => api.users.reactivateUser({ userId: current.id, etag: current.etag }));
      if (answer.user === undefined) throw new Error("ReactivateUser answered without the user");
      onDone(answer.user);
    } catch (caught) {
      const failure = failureOf(caught);
      if (failure.code !== Code.Aborted) setError(describeFailure(failure));
      else await startAgainFromCurrent();
    } finally {
      setBusy(false);
    }
  }

  async function startAgainFromCurrent(): Promise<void> {
    try {
      const fresh = await reload();
      if (fresh === undefined) return;
      setCurrent(fresh);
      setStale(true);
    } catch (caught) {
      setError(describeFailure(failureOf(caught)));
    }
  }

  return (
    <Dialog title={`Reactivate ${current.email}`} onClose={onClose} describedBy="reactivate-text">
      <p id="reactivate-text">
        {stillSuspended
          ? `${current.email} can sign in again, with new credentials: the sessions and tokens from before the suspension stay invalid. Reactivating takes nothing away, so one confirmation is enough.`
          : `${current.email} is active: there is nothing to reactivate.`}
      </p>
      {stale && (
        <p class="stale-notice" role="alert">
          {STALE_MESSAGE}
        </p>
      )}
      <ErrorText text={error} />
      <div class="dialog-actions">
        <button type="button" class="button" onClick={onClose}>
          {stillSuspended ? "Cancel" : "Close"}
        </button>
        {stillSuspended && (
          <button type="button" class="button button-primary" disabled={busy} onClick={() => void reactivate()}>
            {busy ? "Reactivating…" : "Reactivate"}
          </button>
        )}
      </div>
    </Dialog>
  );
}
