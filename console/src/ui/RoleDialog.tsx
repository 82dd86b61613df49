// The dialog that changes a user's role, as the product's page has it: the
// three roles to choose from, each expandable to its permissions (from
// RoleService.ListRoles), then a confirmation step that says in plain words
// what the change does. The change is sent with the etag the dialog opened
// with, so a change made meanwhile by someone else is never overwritten.
import { useEffect, useRef, useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { api } from "../api";
import { describeFailure, failureOf } from "../errors";
import { ROLES, roleClass, roleName } from "../format";
import type { ListRolesResponse, RoleDefinition } from "../gen/usermgmt/v1/role_service_pb";
import type { Role, User } from "../gen/usermgmt/v1/resources_pb";
import { guarded, identity } from "../session";
import { Dialog } from "./Dialog";
import { ErrorText } from "./Notice";

/** What the person reads after their change lost to someone else's. */
export const STALE_MESSAGE = "Someone changed this user meanwhile; here is the current state — choose again.";

let roleMatrix: Promise<ListRolesResponse> | undefined;

/** The roles and their permissions, read once per page load (they change only with the service). */
export function loadRoles(): Promise<ListRolesResponse> {
  roleMatrix ??= guarded(() => api.roles.listRoles({})).catch((error: unknown) => {
    roleMatrix = undefined;
    throw error;
  });
  return roleMatrix;
}

export interface RoleChange {
  user: User;
  revokedInvites: number;
}

interface RoleDialogProps {
  user: User;
  onChanged: (change: RoleChange) => void;
  /** Reads the user again after a stale etag; undefined when it is gone. */
  reload: () => Promise<User | undefined>;
  onClose: () => void;
}

export function RoleDialog({ user, onChanged, reload, onClose }: RoleDialogProps) {
  const [current, setCurrent] = useState(user);
  const [chosen, setChosen] = useState<Role>(user.role);
  const [step, setStep] = useState<"choose" | "confirm">("choose");
  const [matrix, setMatrix] = useState<ListRolesResponse | undefined>(undefined);
  const [stale, setStale] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const chooseRef = useRef<HTMLFieldSetElement>(null);
  const confirmRef = useRef<HTMLDivElement>(null);

  useEffect(() => {
    loadRoles()
      .then(setMatrix)
      .catch((caught: unknown) => setError(`The roles' permissions could not be read: ${describeFailure(failureOf(caught))}`));
  }, []);

  useEffect(() => {
    if (step === "confirm") confirmRef.current?.focus();
    else chooseRef.current?.querySelector<HTMLInputElement>("input:checked")?.focus();
  }, [step, current]);

  function proceed(): void {
    if (chosen === current.role) {
      setError(`${current.email} already is ${roleName(chosen)}: choose another role.`);
      return;
    }
    setError("");
    setStale(false);
    setStep("confirm");
  }

  async function change(): Promise<void> {
    setBusy(true);
    setError("");
    try {
      const answer = await guarded(() =>
        api.users.updateUserRole({ userId: current.id, role: chosen, etag: current.etag }),
      );
      if (answer.user === undefined) throw new Error("UpdateUserRole answered without the user");
      onChanged({ user: answer.user, revokedInvites: answer.revokedInvites });
    } catch (caught) {
      const failure = failureOf(caught);
      if (failure.code === Code.Aborted) await startAgainFromCurrent();
      else setError(describeFailure(failure));
    } finally {
      setBusy(false);
    }
  }

  /** Someone changed the user since the dialog opened: show the user as it is now. */
  async function startAgainFromCurrent(): Promise<void> {
    try {
      const fresh = await reload();
      if (fresh === undefined) return;
      setCurrent(fresh);
      setChosen(fresh.role);
      setStale(true);
      setStep("choose");
    } catch (caught) {
      setError(describeFailure(failureOf(caught)));
    }
  }

  return (
    <Dialog title={`Edit the role of ${current.email}`} onClose={onClose} describedBy="role-dialog-text">
      {step === "choose" ? (
        <>
          <p id="role-dialog-text">
            {current.email} is <span class={roleClass(current.role)}>{roleName(current.role)}</span>. Choose the new
            role; each role shows what it may do.
          </p>
          {stale && (
            <p class="stale-notice" role="alert">
              {STALE_MESSAGE}
            </p>
          )}
          <fieldset class="role-options" ref={chooseRef}>
            <legend>New role</legend>
            {ROLES.map((role) => (
              <RoleOption
                key={role}
                role={role}
                definition={matrix?.roles.find((r) => r.role === role)}
                describe={(id) => matrix?.permissions.find((p) => p.id === id)?.description ?? ""}
                current={role === current.role}
                checked={role === chosen}
                onChoose={() => setChosen(role)}
              />
            ))}
          </fieldset>
          <ErrorText text={error} />
          <div class="dialog-actions">
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button type="button" class="button button-primary" onClick={proceed}>
              Continue
            </button>
          </div>
        </>
      ) : (
        <>
          <div id="role-dialog-text" class="warning-box" tabIndex={-1} ref={confirmRef} data-testid="role-consequences">
            <p>
              <strong>{current.email}</strong> becomes <span class={roleClass(chosen)}>{roleName(chosen)}</span>.
            </p>
            <p>Every token and session of this user stops working now.</p>
            <p>{invitesSentence(matrix?.roles.find((r) => r.role === chosen))}</p>
            <p>Playback tokens they issued stay valid until they expire.</p>
            {current.id === identity.value?.user.id && <p>This is you: you will be signed out.</p>}
          </div>
          <ErrorText text={error} />
          <div class="dialog-actions">
            <button type="button" class="button" onClick={() => setStep("choose")}>
              Back
            </button>
            <button type="button" class="button button-danger" disabled={busy} onClick={() => void change()}>
              {busy ? "Changing role…" : "Change role"}
            </button>
          </div>
        </>
      )}
    </Dialog>
  );
}

/** What happens to the pending invites the user created. */
function invitesSentence(definition: RoleDefinition | undefined): string {
  if (definition === undefined) return "Pending invites they created are revoked if the new role cannot invite.";
  return definition.permissions.includes("users.invite")
    ? `Pending invites they created stay pending: ${definition.displayName} may invite.`
    : `Pending invites they created are revoked: ${definition.displayName} cannot invite.`;
}

interface RoleOptionProps {
  role: Role;
  definition: RoleDefinition | undefined;
  describe: (permission: string) => string;
  current: boolean;
  checked: boolean;
  onChoose: () => void;
}

/** One role to choose, with its permissions behind a disclosure button. */
function RoleOption({ role, definition, describe, current, checked, onChoose }: RoleOptionProps) {
  const [expanded, setExpanded] = useState(false);
  const name = roleName(role);
  const id = `role-option-${name}`;
  const permissions = definition?.permissions ?? [];
  return (
    <div class={`role-option${checked ? " role-option-checked" : ""}`}>
      <div class="role-choice">
        <input
          type="radio"
          name="new-role"
          id={id}
          checked={checked}
          onChange={onChoose}
          aria-describedby={`${id}-description`}
        />
        <label for={id}>
          <span class={roleClass(role)}>{name}</span>
          {current && <span class="muted"> (current)</span>}
        </label>
      </div>
      <p id={`${id}-description`} class="muted role-description">
        {definition?.description ?? ""}
      </p>
      <button
        type="button"
        class="disclosure"
        aria-expanded={expanded}
        aria-controls={`${id}-permissions`}
        disabled={definition === undefined}
        onClick={() => setExpanded(!expanded)}
      >
        <span class="disclosure-mark" aria-hidden="true" />
        Permissions of {name}
        <span class="muted"> ({permissions.length})</span>
      </button>
      <ul id={`${id}-permissions`} class="permission-list" hidden={!expanded} aria-label={`Permissions of ${name}`}>
        {permissions.map((permission) => (
          <li key={permission}>
            <code>{permission}</code> <span class="muted">{describe(permission)}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}
