// The organisation's audit log (nanoAdmin): every change, who made it and
// what it changed, filtered by any of the filters ListAuditEvents offers,
// a page at a time, and live: a change committed while the person looks at
// the newest events shows at the top within a second.
import { useEffect, useRef, useState } from "preact/hooks";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { api } from "../api";
import { describeFailure, failureOf } from "../errors";
import { onFeed } from "../live";
import type { AuditEvent, ListAuditEventsRequest } from "../gen/usermgmt/v1/audit_service_pb";
import { guarded, onSessionEnd } from "../session";
import { ErrorText } from "../ui/Notice";

const PAGE_SIZE = 25;
/** Changes arriving closer together than this reload the page once. */
const LIVE_DEBOUNCE_MS = 150;

/** The actions of the audit log, grouped as the filter offers them. */
const ACTION_GROUPS: readonly { group: string; actions: readonly [string, string][] }[] = [
  {
    group: "Users",
    actions: [
      ["user.create", "User created"],
      ["user.update_role", "Role changed"],
      ["user.suspend", "User suspended"],
      ["user.reactivate", "User reactivated"],
      ["user.delete", "User deleted"],
      ["user.renew_token_key", "Token key renewed"],
      ["user.change_password", "Password changed"],
      ["user.request_password_reset", "Password reset requested"],
      ["user.reset_password", "Password reset"],
    ],
  },
  {
    group: "Invites",
    actions: [
      ["invite.create", "Invite created"],
      ["invite.accept", "Invite accepted"],
      ["invite.revoke", "Invite revoked"],
    ],
  },
  {
    group: "Sign-in and sessions",
    actions: [
      ["login.succeeded", "Signed in"],
      ["login.failed", "Sign-in failed"],
      ["session.open", "Session opened"],
      ["session.refresh", "Session refreshed"],
      ["session.logout", "Signed out"],
      ["session.revoke", "Session ended by its user"],
      ["session.end", "Session ended by a change of its user"],
      ["session.refresh_token_reused", "Refresh token used twice"],
    ],
  },
  {
    group: "Personal API tokens",
    actions: [
      ["api_token.create", "API token created"],
      ["api_token.first_use", "API token first used"],
      ["api_token.revoke", "API token revoked"],
      ["api_token.end", "API token ended by a change of its user"],
    ],
  },
  {
    group: "Organisation",
    actions: [
      ["organisation.create", "Organisation created"],
      ["organisation.update", "Organisation updated"],
      ["organisation.members", "Members changed"],
      ["organisation.rotate_api_key", "API key rotated"],
    ],
  },
  {
    group: "Playback",
    actions: [
      ["playback_token.issue", "Playback token issued"],
      ["playback_token.revoke", "Playback token revoked"],
      ["playback_key.create", "Playback key created"],
      ["playback_key.rotate", "Playback key rotated"],
      ["playback_key.retire", "Playback key retired"],
      ["playback_key.revoke", "Playback key revoked"],
      ["playback_key.rewrap", "Playback key re-sealed"],
    ],
  },
];

const ACTION_LABELS = new Map(ACTION_GROUPS.flatMap((g) => g.actions));

/** The filters as typed in the form. */
interface FilterForm {
  action: string;
  actor: string;
  target: string;
  from: string;
  until: string;
  afterSequence: string;
}

const NO_FILTERS: FilterForm = { action: "", actor: "", target: "", from: "", until: "", afterSequence: "" };

/** The filters as the request carries them. */
type Query = Pick<ListAuditEventsRequest, "actor" | "targetId" | "action" | "afterSequence" | "startTime" | "endTime">;

const EVERYTHING: Query = { actor: "", targetId: "", action: "", afterSequence: 0n };

/** The page shown: its token, and the tokens of the pages before it. */
interface Paging {
  tokens: string[];
  next: string;
}

/** User ids to emails, learnt from the events and GetUser; forgotten at sign-out. */
const emails = new Map<string, string>();
onSessionEnd(() => emails.clear());

export function Audit() {
  const [form, setForm] = useState<FilterForm>(NO_FILTERS);
  const [query, setQuery] = useState<Query>(EVERYTHING);
  const [events, setEvents] = useState<AuditEvent[] | undefined>(undefined);
  const [paging, setPaging] = useState<Paging>({ tokens: [""], next: "" });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [formError, setFormError] = useState("");
  const [unseen, setUnseen] = useState(0);
  const [, setNames] = useState(0);
  const latest = useRef(0);
  const table = useRef<HTMLDivElement>(null);
  // The live listener reads the current view through this, not a stale closure.
  const view = useRef({ query, paging });
  view.current = { query, paging };

  const oldestFirst = query.afterSequence > 0n;

  async function load(nextQuery: Query, tokens: string[], options: { focusTable?: boolean } = {}): Promise<void> {
    const ticket = ++latest.current;
    setBusy(true);
    try {
      const answer = await guarded(() =>
        api.audit.listAuditEvents({ ...nextQuery, pageSize: PAGE_SIZE, pageToken: tokens[tokens.length - 1] }),
      );
      if (ticket !== latest.current) return;
      setEvents(answer.events);
      setPaging({ tokens, next: answer.nextPageToken });
      setQuery(nextQuery);
      setError("");
      if (tokens.length === 1) setUnseen(0);
      if (options.focusTable === true) table.current?.focus();
      void learnNames(answer.events).then((learned) => learned && setNames((n) => n + 1));
    } catch (caught) {
      if (ticket === latest.current) setError(describeFailure(failureOf(caught)));
    } finally {
      if (ticket === latest.current) setBusy(false);
    }
  }

  useEffect(() => {
    void load(EVERYTHING, [""]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reloadSoon = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        const { query: shown, paging: at } = view.current;
        void load(shown, at.tokens);
      }, LIVE_DEBOUNCE_MS);
    };
    const stop = onFeed((event) => {
      const { query: shown, paging: at } = view.current;
      // New events go to the top (newest first) or to the end (after a
      // sequence, oldest first): reload when that page is the one shown.
      const showsNewest = shown.afterSequence > 0n ? at.next === "" : at.tokens.length === 1;
      if (event.kind === "reset" || showsNewest) reloadSoon();
      else if (shown.afterSequence === 0n) setUnseen((n) => n + 1);
    });
    return () => {
      stop();
      if (timer !== undefined) clearTimeout(timer);
    };
  }, []);

  async function apply(event: Event): Promise<void> {
    event.preventDefault();
    setFormError("");
    try {
      const next = await queryOf(form);
      await load(next, [""]);
    } catch (caught) {
      setFormError(caught instanceof FilterError ? caught.message : describeFailure(failureOf(caught)));
    }
  }

  function clear(): void {
    setForm(NO_FILTERS);
    setFormError("");
    void load(EVERYTHING, [""]);
  }

  const filtered = JSON.stringify(form) !== JSON.stringify(NO_FILTERS) || !sameQuery(query, EVERYTHING);
  const field = (name: keyof FilterForm) => ({
    id: `audit-${name}`,
    value: form[name],
    onInput: (e: { currentTarget: HTMLInputElement | HTMLSelectElement }) =>
      setForm({ ...form, [name]: e.currentTarget.value }),
  });

  return (
    <section aria-labelledby="audit-title" class="audit">
      <h1 id="audit-title">Audit log</h1>
      <p class="muted">Every change in the organisation, who made it and what it changed. Times are UTC.</p>
      <form class="card audit-filters" aria-label="Filter the audit log" onSubmit={(e) => void apply(e)}>
        <div class="toolbar">
          <div>
            <label for="audit-action">Action</label>
            <select {...field("action")}>
              <option value="">All actions</option>
              {ACTION_GROUPS.map((g) => (
                <optgroup key={g.group} label={g.group}>
                  {g.actions.map(([action, label]) => (
                    <option key={action} value={action}>
                      {label}
                    </option>
                  ))}
                </optgroup>
              ))}
            </select>
          </div>
          <div>
            <label for="audit-actor">Actor</label>
            <input {...field("actor")} aria-describedby="audit-actor-help" autocomplete="off" />
            <p id="audit-actor-help" class="field-help">
              A member's email, <code>api_key:…</code> or <code>operator</code>
            </p>
          </div>
          <div>
            <label for="audit-target">Target</label>
            <input {...field("target")} aria-describedby="audit-target-help" autocomplete="off" />
            <p id="audit-target-help" class="field-help">
              A member's email, or the id of what changed
            </p>
          </div>
        </div>
        <div class="toolbar">
          <div>
            <label for="audit-from">From (UTC)</label>
            <input {...field("from")} type="datetime-local" step="1" />
          </div>
          <div>
            <label for="audit-until">Until (UTC)</label>
            <input {...field("until")} type="datetime-local" step="1" />
          </div>
          <div>
            <label for="audit-afterSequence">After change #</label>
            <input
              {...field("afterSequence")}
              type="number"
              min="0"
              step="1"
              inputMode="numeric"
              aria-describedby="audit-afterSequence-help"
            />
            <p id="audit-afterSequence-help" class="field-help">
              Oldest first from there
            </p>
          </div>
        </div>
        <div class="audit-filter-actions">
          <button type="submit" class="button button-primary" disabled={busy} aria-busy={busy}>
            {busy ? "Loading…" : "Apply filters"}
          </button>
          <button type="button" class="button" onClick={clear} disabled={!filtered}>
            Clear filters
          </button>
        </div>
        <ErrorText text={formError} />
      </form>
      <ErrorText text={error} />
      <p class="muted audit-summary" role="status" data-testid="audit-summary">
        {summaryOf(events, paging, oldestFirst)}
      </p>
      {unseen > 0 && (
        <p class="audit-unseen">
          <button type="button" class="button" onClick={() => void load(query, [""], { focusTable: true })}>
            {unseen === 1 ? "1 new change: show the newest" : `${unseen} new changes: show the newest`}
          </button>
        </p>
      )}
      {events !== undefined && events.length === 0 ? (
        <div class="card audit-empty" data-testid="audit-empty">
          <h2>{sameQuery(query, EVERYTHING) ? "No audit events yet" : "No audit events match these filters"}</h2>
          <p class="muted">
            {sameQuery(query, EVERYTHING)
              ? "Changes to the organisation show here as they happen."
              : "Try a wider time range or fewer filters."}
          </p>
        </div>
      ) : (
        <div
          class="table-wrap"
          role="region"
          aria-labelledby="audit-caption"
          tabIndex={0}
          ref={table}
          aria-busy={busy}
        >
          <table class="audit-table">
            <caption id="audit-caption" class="visually-hidden">
              Audit events, {oldestFirst ? "oldest" : "newest"} first
            </caption>
            <thead>
              <tr>
                <th scope="col">Time (UTC)</th>
                <th scope="col">Actor</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Details</th>
                <th scope="col">Change #</th>
              </tr>
            </thead>
            <tbody>
              {(events ?? []).map((e) => (
                <EventRow key={e.id} event={e} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <nav class="pager" aria-label="Audit log pages">
        <button
          type="button"
          class="button"
          disabled={busy || paging.tokens.length === 1}
          onClick={() => void load(query, paging.tokens.slice(0, -1), { focusTable: true })}
        >
          Previous page
        </button>
        <span class="muted">Page {paging.tokens.length}</span>
        <button
          type="button"
          class="button"
          disabled={busy || paging.next === ""}
          onClick={() => void load(query, [...paging.tokens, paging.next], { focusTable: true })}
        >
          Next page
        </button>
      </nav>
    </section>
  );
}

function EventRow({ event }: { event: AuditEvent }) {
  const label = ACTION_LABELS.get(event.action);
  return (
    <tr data-testid="audit-row">
      <td class="audit-time">
        <time dateTime={event.occurredAt === undefined ? undefined : timestampDate(event.occurredAt).toISOString()}>
          {timeOf(event)}
        </time>
      </td>
      <td>{actorOf(event.actor)}</td>
      <td>
        <span class="audit-action">{label ?? event.action}</span>
        {label !== undefined && <code class="muted audit-code">{event.action}</code>}
      </td>
      <td>
        <span class="audit-target">{targetOf(event)}</span>
        <span class="muted audit-code">{event.targetType}</span>
      </td>
      <td>
        <Details before={event.before} after={event.after} />
        {event.requestId !== "" && <span class="muted audit-code">request {event.requestId}</span>}
      </td>
      <td class="audit-sequence">{event.sequence > 0n ? event.sequence.toString() : "—"}</td>
    </tr>
  );
}

function Details(props: { before: string; after: string }) {
  const before = readable(props.before);
  const after = readable(props.after);
  if (before !== "" && after !== "") {
    return (
      <span class="audit-change">
        {before} <span aria-hidden="true">→</span>
        <span class="visually-hidden"> became </span> {after}
      </span>
    );
  }
  if (before !== "") return <span class="audit-change">was {before}</span>;
  if (after !== "") return <span class="audit-change">{after}</span>;
  return null;
}

const USER_ID = /user ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/g;

/**
 * Names users by email where the text names them by id, and "user.delete
 * user <id>" (what changed the members) reads "User deleted: bob@example.com".
 */
function readable(text: string): string {
  const named = text.replace(USER_ID, (whole, id: string) => emails.get(id) ?? whole);
  const members = /^([a-z_]+\.[a-z_]+) (.+)$/.exec(named);
  const label = members === null ? undefined : ACTION_LABELS.get(members[1] ?? "");
  return label === undefined ? named : `${label}: ${members?.[2] ?? ""}`;
}

/** `2026-12-08 14:03:21 UTC`: the log is read to the second. */
function timeOf(event: AuditEvent): string {
  if (event.occurredAt === undefined) return "—";
  return `${timestampDate(event.occurredAt).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

function targetOf(event: AuditEvent): string {
  if (event.targetLabel !== "") return event.targetLabel;
  if (event.targetType === "organisation") return "The organisation";
  if (event.targetType === "user") return emails.get(event.targetId) ?? event.targetId;
  return event.targetId;
}

function actorOf(actor: string): string {
  if (actor === "operator") return "Operator (command line)";
  if (actor.startsWith("api_key:")) return `Organisation API key ${actor.slice("api_key:".length)}`;
  if (actor.startsWith("user:")) {
    const id = actor.slice("user:".length);
    return emails.get(id) ?? `user ${id}`;
  }
  return actor === "" ? "—" : actor;
}

function summaryOf(events: AuditEvent[] | undefined, paging: Paging, oldestFirst: boolean): string {
  if (events === undefined) return "Loading the audit log…";
  if (events.length === 0) return "No events.";
  const order = oldestFirst ? "oldest first" : "newest first";
  const more = paging.next !== "" ? "; more on the next page" : "";
  return `${events.length} ${events.length === 1 ? "event" : "events"} on page ${paging.tokens.length}, ${order}${more}.`;
}

function sameQuery(a: Query, b: Query): boolean {
  return (
    a.actor === b.actor &&
    a.targetId === b.targetId &&
    a.action === b.action &&
    a.afterSequence === b.afterSequence &&
    a.startTime?.seconds === b.startTime?.seconds &&
    a.endTime?.seconds === b.endTime?.seconds
  );
}

/** A filter the form cannot send, said next to the form. */
class FilterError extends Error {}

/** The request's filters from the form: emails become user ids, times UTC instants. */
async function queryOf(form: FilterForm): Promise<Query> {
  const from = instantOf(form.from, "From");
  const until = instantOf(form.until, "Until");
  if (from !== undefined && until !== undefined && from >= until) {
    throw new FilterError("From must be before Until.");
  }
  const afterSequence = form.afterSequence.trim();
  if (afterSequence !== "" && !/^\d+$/.test(afterSequence)) {
    throw new FilterError("After change # must be a whole number.");
  }
  return {
    action: form.action,
    actor: await actorFilterOf(form.actor.trim()),
    targetId: await targetFilterOf(form.target.trim()),
    startTime: from === undefined ? undefined : timestampFromDate(from),
    endTime: until === undefined ? undefined : timestampFromDate(until),
    afterSequence: afterSequence === "" ? 0n : BigInt(afterSequence),
  };
}

/** A datetime-local value read as UTC. */
function instantOf(value: string, name: string): Date | undefined {
  if (value === "") return undefined;
  const instant = new Date(`${value.length === 16 ? `${value}:00` : value}Z`);
  if (Number.isNaN(instant.getTime())) throw new FilterError(`${name} is not a date and time.`);
  return instant;
}

async function actorFilterOf(text: string): Promise<string> {
  if (text === "" || !text.includes("@")) return text;
  return `user:${await userIdOf(text)}`;
}

async function targetFilterOf(text: string): Promise<string> {
  if (text === "" || !text.includes("@")) return text;
  return await userIdOf(text);
}

/** The id of the member with `email` (the prefix search, then the exact match). */
async function userIdOf(email: string): Promise<string> {
  const wanted = email.toLowerCase();
  let pageToken = "";
  // A prefix search may answer short pages; an exact email is among the first few.
  for (let page = 0; page < 5; page++) {
    const answer = await guarded(() => api.users.listUsers({ emailPrefix: email, pageSize: 50, pageToken }));
    const user = answer.users.find((u) => u.email.toLowerCase() === wanted);
    if (user !== undefined) {
      emails.set(user.id, user.email);
      return user.id;
    }
    if (answer.nextPageToken === "") break;
    pageToken = answer.nextPageToken;
  }
  throw new FilterError(`No member has the email ${email}.`);
}

/**
 * Learns the emails of the users the events name: from the events about
 * users (their label is the email), then from GetUser; true if any was new.
 */
async function learnNames(events: AuditEvent[]): Promise<boolean> {
  let learned = false;
  for (const e of events) {
    if (e.targetType === "user" && e.targetLabel.includes("@") && !emails.has(e.targetId)) {
      emails.set(e.targetId, e.targetLabel);
      learned = true;
    }
  }
  const named = events.flatMap((e) => [
    e.actor.startsWith("user:") ? e.actor.slice("user:".length) : "",
    ...[...`${e.before} ${e.after}`.matchAll(USER_ID)].map((match) => match[1] ?? ""),
  ]);
  const unknown = new Set(named.filter((id) => id !== "" && !emails.has(id)));
  await Promise.all(
    [...unknown].map(async (id) => {
      try {
        const answer = await guarded(() => api.users.getUser({ userId: id }));
        if (answer.user !== undefined) emails.set(id, answer.user.email);
      } catch (caught) {
        if (failureOf(caught).code !== Code.NotFound) return;
        emails.set(id, "a deleted user");
      }
      learned = true;
    }),
  );
  return learned;
}
