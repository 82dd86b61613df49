// Invites: create one (email, role, how long it works) and hand its link to
// the invitee — the link is shown once, as the service returns its token
// only then —, the pending invites a page at a time, and revoke. The list
// follows the change feed: an invite accepted or revoked anywhere leaves it,
// a new one joins it.
import { useEffect, useRef, useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { api } from "../api";
import { describeFailure, failureOf, type CallFailure } from "../errors";
import { roleClass, roleName, ROLES, utc } from "../format";
import { onFeed } from "../live";
import { Role } from "../gen/usermgmt/v1/resources_pb";
import type { RoleDefinition } from "../gen/usermgmt/v1/role_service_pb";
import type { Invite } from "../gen/usermgmt/v1/user_service_pb";
import { can, guarded, identity } from "../session";
import { ConfirmDialog } from "../ui/ConfirmDialog";
import { Dialog } from "../ui/Dialog";
import { ErrorText, notify } from "../ui/Notice";

/** Invites per page of the pending list. */
export const INVITES_PAGE_SIZE = 50;

const VALIDITY_DAYS = [1, 7, 30] as const;
const DAY_SECONDS = 86_400n;

interface Created {
  invite: Invite;
  link: string;
}

export function Invites() {
  const pending = usePendingInvites();
  const [created, setCreated] = useState<Created | undefined>(undefined);
  const [revoking, setRevoking] = useState<Invite | undefined>(undefined);
  const [revokedCount, setRevokedCount] = useState(0);

  return (
    <section aria-labelledby="invites-title" class="invites">
      <h1 id="invites-title">Invites</h1>
      <InviteForm
        reopened={created === undefined}
        onCreated={(invite, token) => {
          pending.add(invite);
          setCreated({ invite, link: `${window.location.origin}/accept-invite#token=${token}` });
        }}
      />
      <PendingInvites pending={pending} onRevoke={setRevoking} focusAfter={revokedCount} />
      {created !== undefined && <InviteLinkDialog created={created} onClose={() => setCreated(undefined)} />}
      {revoking !== undefined && (
        <RevokeDialog
          invite={revoking}
          onRevoked={(id) => {
            pending.remove(id);
            setRevoking(undefined);
            setRevokedCount((n) => n + 1);
          }}
          onClose={() => setRevoking(undefined)}
        />
      )}
    </section>
  );
}

// ---- The pending list, kept current by the change feed -------------------

interface PendingState {
  invites: Invite[];
  /** The token of the next page; empty when every page is here. */
  next: string;
  loading: boolean;
  error: string;
}

interface Pending extends PendingState {
  loadMore: () => Promise<void>;
  add: (invite: Invite) => void;
  remove: (id: string) => void;
}

function usePendingInvites(): Pending {
  const [state, setState] = useState<PendingState>({ invites: [], next: "", loading: true, error: "" });

  async function loadPage(pageToken: string): Promise<void> {
    setState((s) => ({ ...s, loading: true, error: "" }));
    try {
      const page = await guarded(() => api.users.listInvites({ pageSize: INVITES_PAGE_SIZE, pageToken }));
      setState((s) => ({
        invites: pageToken === "" ? page.invites : appendNew(s.invites, page.invites),
        next: page.nextPageToken,
        loading: false,
        error: "",
      }));
    } catch (caught) {
      setState((s) => ({ ...s, loading: false, error: describeFailure(failureOf(caught)) }));
    }
  }

  // A new invite joins the list only when the list reaches its end: on an
  // earlier page it would stand out of order, and the next page brings it.
  const add = (invite: Invite): void =>
    setState((s) => (s.next !== "" ? s : { ...s, invites: appendNew(s.invites, [invite]) }));
  const remove = (id: string): void => setState((s) => ({ ...s, invites: s.invites.filter((i) => i.id !== id) }));

  useEffect(() => {
    void loadPage("");
    return onFeed((event) => {
      if (event.kind === "reset") return void loadPage("");
      for (const target of event.change.targets) {
        if (target.targetType !== "invite") continue;
        if (target.state.case === "invite") add(target.state.value);
        else remove(target.targetId);
      }
    });
  }, []);

  useDropExpired(state.invites, remove);

  return { ...state, loadMore: () => loadPage(state.next), add, remove };
}

function appendNew(list: Invite[], more: Invite[]): Invite[] {
  const known = new Set(list.map((i) => i.id));
  return [...list, ...more.filter((i) => !known.has(i.id))];
}

/** Takes each invite off the list when it expires (the feed sends no change then). */
function useDropExpired(invites: Invite[], remove: (id: string) => void): void {
  useEffect(() => {
    const expiries = invites.flatMap((i) => (i.expiresAt === undefined ? [] : [{ id: i.id, at: timestampMs(i.expiresAt) }]));
    if (expiries.length === 0) return;
    const first = expiries.reduce((a, b) => (a.at <= b.at ? a : b));
    // setTimeout holds at most 2^31-1 ms (24.8 days); a later expiry waits again.
    const timer = setTimeout(() => {
      expiries.filter((e) => e.at <= Date.now()).forEach((e) => remove(e.id));
    }, Math.min(Math.max(first.at - Date.now(), 0), 2 ** 31 - 1));
    return () => clearTimeout(timer);
  }, [invites]);
}

interface PendingInvitesProps {
  pending: Pending;
  onRevoke: (invite: Invite) => void;
  /** Changes after a revocation: the revoked row's button is gone, the focus goes to the list. */
  focusAfter: number;
}

function PendingInvites({ pending, onRevoke, focusAfter }: PendingInvitesProps) {
  const creators = useCreatorNames(pending.invites);
  const complete = pending.next === "";
  const title = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    if (focusAfter > 0) title.current?.focus();
  }, [focusAfter]);
  return (
    <section class="card invites-pending" aria-labelledby="pending-title" aria-busy={pending.loading}>
      <h2 id="pending-title" ref={title} tabIndex={-1}>
        Pending invites
        {complete && !pending.loading && <span class="muted invites-count"> ({pending.invites.length})</span>}
      </h2>
      <ErrorText text={pending.error} />
      {pending.invites.length === 0 ? (
        <p class="muted" data-testid="invites-empty">
          {pending.loading
            ? "Loading invites…"
            : "No pending invites. Invites you create show here until they are accepted, revoked or expire."}
        </p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Pending invites, oldest first</caption>
            <thead>
              <tr>
                <th scope="col">Email</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">Expires</th>
                <th scope="col">Created by</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {pending.invites.map((invite) => (
                <tr key={invite.id} data-testid="invite-row" data-invite-id={invite.id}>
                  <td class="invite-email">{invite.email}</td>
                  <td>
                    <span class={roleClass(invite.role)}>{roleName(invite.role)}</span>
                  </td>
                  <td class="nowrap">{utc(invite.createdAt)}</td>
                  <td class="nowrap">{utc(invite.expiresAt)}</td>
                  <td>{creators.get(invite.createdBy) ?? invite.createdBy}</td>
                  <td>
                    <button
                      type="button"
                      class="button button-danger button-small"
                      aria-label={`Revoke the invite for ${invite.email}`}
                      onClick={() => onRevoke(invite)}
                    >
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {!complete && (
        <div class="pager">
          <span class="muted">Showing the oldest {pending.invites.length} pending invites.</span>
          <button type="button" class="button" disabled={pending.loading} onClick={() => void pending.loadMore()}>
            {pending.loading ? "Loading…" : "Show more invites"}
          </button>
        </div>
      )}
    </section>
  );
}

/** Who created each invite, by name where the caller may read users. */
function useCreatorNames(invites: Invite[]): ReadonlyMap<string, string> {
  const [names, setNames] = useState<ReadonlyMap<string, string>>(new Map());
  const asked = useRef(new Set<string>());
  useEffect(() => {
    for (const creator of new Set(invites.map((i) => i.createdBy))) {
      if (asked.current.has(creator)) continue;
      asked.current.add(creator);
      void creatorName(creator).then((name) => setNames((prev) => new Map(prev).set(creator, name)));
    }
  }, [invites]);
  return names;
}

async function creatorName(creator: string): Promise<string> {
  const me = identity.value?.user;
  if (creator === `user:${me?.id ?? ""}`) return `${me?.email ?? ""} (you)`;
  if (creator.startsWith("api_key:")) return "The organisation API key";
  if (creator === "operator") return "An operator";
  if (!creator.startsWith("user:") || !can("users.read")) return creator;
  try {
    const answer = await guarded(() => api.users.getUser({ userId: creator.slice("user:".length) }));
    return answer.user?.email ?? creator;
  } catch {
    return creator;
  }
}

// ---- Creating an invite --------------------------------------------------

function InviteForm({ onCreated, reopened }: { onCreated: (invite: Invite, token: string) => void; reopened: boolean }) {
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<Role>(Role.NANO_USER);
  const [days, setDays] = useState<number>(7);
  const [emailError, setEmailError] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const roles = useRoleDefinitions();
  const emailInput = useRef<HTMLInputElement>(null);
  const justCreated = useRef(false);

  // Back from the link's dialog, the next invite starts at the email field.
  useEffect(() => {
    if (reopened && justCreated.current) {
      justCreated.current = false;
      emailInput.current?.focus();
    }
  }, [reopened]);

  async function create(event: Event): Promise<void> {
    event.preventDefault();
    setBusy(true);
    setEmailError("");
    setError("");
    try {
      const ttl = { seconds: BigInt(days) * DAY_SECONDS, nanos: 0 };
      const answer = await guarded(() => api.users.createInvite({ email: email.trim(), role, ttl }));
      if (answer.invite === undefined) throw new Error("CreateInvite answered without the invite");
      setEmail("");
      justCreated.current = true;
      onCreated(answer.invite, answer.inviteToken);
    } catch (caught) {
      showFailure(failureOf(caught));
    } finally {
      setBusy(false);
    }
  }

  function showFailure(failure: CallFailure): void {
    const onEmail = failure.fieldViolations.filter((v) => v.field === "email");
    if (onEmail.length > 0) setEmailError(`The email ${onEmail.map((v) => v.description).join(" and ")}.`);
    else if (failure.code === Code.AlreadyExists) setEmailError(sentence(failure.message));
    else setError(describeFailure(failure));
    if (onEmail.length > 0 || failure.code === Code.AlreadyExists) emailInput.current?.focus();
  }

  return (
    <form class="card invite-form" onSubmit={(event) => void create(event)} aria-labelledby="invite-form-title">
      <h2 id="invite-form-title">Invite someone</h2>
      <p class="muted">
        The invite gives you a link to send to the person. Opening it, they choose a password and join the organisation
        with the role you pick.
      </p>
      <label for="invite-email">Email</label>
      <input
        id="invite-email"
        ref={emailInput}
        type="email"
        autocomplete="off"
        required
        aria-invalid={emailError !== "" ? "true" : undefined}
        aria-describedby={emailError !== "" ? "invite-email-error" : undefined}
        value={email}
        onInput={(e) => setEmail(e.currentTarget.value)}
      />
      {emailError !== "" && (
        <p id="invite-email-error" class="error-text" role="alert">
          {emailError}
        </p>
      )}
      <fieldset class="invite-roles">
        <legend>Role</legend>
        {ROLES.map((r) => (
          <label key={r} class="invite-role">
            <input type="radio" name="invite-role" value={r} checked={role === r} onChange={() => setRole(r)} />
            <span class={roleClass(r)}>{roleName(r)}</span>
            <span class="muted invite-role-text">{roles.get(r) ?? ""}</span>
          </label>
        ))}
      </fieldset>
      <label for="invite-validity">Valid for</label>
      <select id="invite-validity" value={String(days)} onChange={(e) => setDays(Number(e.currentTarget.value))}>
        {VALIDITY_DAYS.map((d) => (
          <option key={d} value={String(d)}>
            {d === 1 ? "1 day" : `${d} days`}
          </option>
        ))}
      </select>
      <ErrorText text={error} />
      <div class="invite-form-actions">
        <button type="submit" class="button button-primary" disabled={busy}>
          {busy ? "Creating invite…" : "Create invite"}
        </button>
      </div>
    </form>
  );
}

/** The roles' one-sentence descriptions from ListRoles (none if it fails). */
function useRoleDefinitions(): ReadonlyMap<Role, string> {
  const [roles, setRoles] = useState<ReadonlyMap<Role, string>>(new Map());
  useEffect(() => {
    guarded(() => api.roles.listRoles({}))
      .then((answer) => setRoles(new Map(answer.roles.map((r: RoleDefinition) => [r.role, r.description]))))
      .catch(() => undefined);
  }, []);
  return roles;
}

function sentence(message: string): string {
  const text = message.trim();
  if (text === "") return text;
  return `${text[0]?.toUpperCase() ?? ""}${text.slice(1)}${/[.!?]$/.test(text) ? "" : "."}`;
}

// ---- The link, shown once -----------------------------------------------

function InviteLinkDialog({ created, onClose }: { created: Created; onClose: () => void }) {
  const [copied, setCopied] = useState("");
  const linkInput = useRef<HTMLInputElement>(null);
  const organisation = identity.value?.organisation?.name ?? "the organisation";

  async function copy(): Promise<void> {
    try {
      await navigator.clipboard.writeText(created.link);
      setCopied("The link is copied.");
    } catch {
      // No clipboard (an insecure origin, a refused permission): select the
      // link so that the person copies it with the keyboard.
      linkInput.current?.focus();
      linkInput.current?.select();
      setCopied("The link is selected: copy it with Ctrl+C (⌘C on a Mac).");
    }
  }

  return (
    <Dialog title="Invite created" onClose={onClose} describedBy="invite-link-once">
      <p>
        Send this link to <strong>{created.invite.email}</strong>. It makes them{" "}
        <span class={roleClass(created.invite.role)}>{roleName(created.invite.role)}</span> of {organisation}, works once,
        and expires {utc(created.invite.expiresAt)}.
      </p>
      <label for="invite-link">Invite link</label>
      <input
        id="invite-link"
        ref={linkInput}
        class="invite-link"
        readOnly
        value={created.link}
        onFocus={(e) => e.currentTarget.select()}
      />
      <p id="invite-link-once" class="invite-once">
        This link is shown only now: copy it before you close this window.
      </p>
      <p class="muted invite-copied" role="status">
        {copied}
      </p>
      <div class="dialog-actions">
        <button type="button" class="button" onClick={() => void copy()}>
          Copy link
        </button>
        <button type="button" class="button button-primary" onClick={onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}

// ---- Revoking -------------------------------------------------------------

function RevokeDialog({
  invite,
  onRevoked,
  onClose,
}: {
  invite: Invite;
  onRevoked: (id: string) => void;
  onClose: () => void;
}) {
  return (
    <ConfirmDialog
      title="Revoke the invite?"
      actionLabel="Revoke invite"
      busyLabel="Revoking…"
      action={() => api.users.revokeInvite({ inviteId: invite.id })}
      onDone={(alreadyOver) => {
        notify(
          alreadyOver
            ? `The invite for ${invite.email} is no longer pending: it was accepted, revoked or expired.`
            : `The invite for ${invite.email} was revoked.`,
        );
        onRevoked(invite.id);
      }}
      onClose={onClose}
    >
      <p>
        The invite for <strong>{invite.email}</strong> (
        <span class={roleClass(invite.role)}>{roleName(invite.role)}</span>) stops working at once: its link can no
        longer be used to join.
      </p>
    </ConfirmDialog>
  );
}
