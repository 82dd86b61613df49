// The user overview: the organisation's users a page at a time, filtered by
// role, state and the start of the email, with the total the service counts,
// an export of the whole filtered list as CSV, and the rows kept current by
// the change feed. A user's row expands to its details and actions.
//
// Order: the contract lists users oldest first (by id), and by email while
// searching by an email prefix; it offers no other order, so the page says
// which of the two applies (and marks that column with aria-sort) rather than
// re-sorting one page in the browser, which would look like an order of the
// whole list and is not.
import { useEffect, useRef, useState } from "preact/hooks";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { api } from "../api";
import { describeFailure, failureOf } from "../errors";
import { ROLES, roleClass, roleName, stateName, utc } from "../format";
import { onFeed } from "../live";
import type { TargetChange } from "../gen/usermgmt/v1/change_service_pb";
import { Role, UserState, type User } from "../gen/usermgmt/v1/resources_pb";
import { guarded, identity } from "../session";
import { ErrorText, notify } from "../ui/Notice";
import { UserActions } from "./UserActions";

const PAGE_SIZES: readonly number[] = [25, 50, 100];
const SEARCH_DELAY_MS = 300;
const RELOAD_DELAY_MS = 200;
/**
 * With a prefix a ListUsers page may be empty and still have a next page
 * (one call reads a bounded number of rows): the view follows up to this
 * many such pages before it shows an empty one with "Next page".
 */
const MAX_EMPTY_PAGES = 10;
const EXPORT_PAGE_SIZE = 1000;
const COLUMNS = 6;
const COUNT = new Intl.NumberFormat("en-US");

interface Filter {
  role: Role;
  state: UserState;
  /** The email prefix searched for, trimmed; "" when not searching. */
  prefix: string;
}

const NO_FILTER: Filter = { role: Role.UNSPECIFIED, state: UserState.UNSPECIFIED, prefix: "" };

interface UserPage {
  users: User[];
  nextToken: string;
  /** The number of matching users over all pages; undefined while searching (not counted). */
  total: number | undefined;
}

export function Users() {
  const [filter, setFilter] = useState<Filter>(NO_FILTER);
  const [searchText, setSearchText] = useState("");
  const [pageSize, setPageSize] = useState(PAGE_SIZES[0] ?? 25);
  // The page token of every page up to the current one ("" for the first).
  const [tokens, setTokens] = useState<readonly string[]>([""]);
  const [reloads, setReloads] = useState(0);
  const [page, setPage] = useState<UserPage | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState("");
  const [searchError, setSearchError] = useState("");
  const [expanded, setExpanded] = useState<ReadonlySet<string>>(new Set());
  const [exported, setExported] = useState<number | undefined>(undefined);
  const [exportError, setExportError] = useState("");

  const feedState = useRef(new FeedState()).current;
  const generation = useRef(0);
  const filterRef = useRef(filter);
  filterRef.current = filter;
  const pageRef = useRef(page);
  pageRef.current = page;
  const reloadTimer = useRef<ReturnType<typeof setTimeout>>();
  const exportAbort = useRef<AbortController>();

  /** Changes the filter and goes back to the first page; a filter as it is stays on its page. */
  function applyFilter(change: Partial<Filter>): void {
    const current = filterRef.current;
    const next = { ...current, ...change };
    if (next.role === current.role && next.state === current.state && next.prefix === current.prefix) return;
    filterRef.current = next;
    setFilter(next);
    setTokens([""]);
  }

  function reloadSoon(): void {
    clearTimeout(reloadTimer.current);
    reloadTimer.current = setTimeout(() => setReloads((n) => n + 1), RELOAD_DELAY_MS);
  }

  function isOnPage(userId: string): boolean {
    return pageRef.current?.users.some((user) => user.id === userId) ?? false;
  }

  /** A user's new state, from the feed or from an action on this page. */
  function showUser(user: User): void {
    feedState.noteUser(user);
    const current = filterRef.current;
    const onPage = isOnPage(user.id);
    if (onPage && matches(user, current)) {
      setPage((p) => p && { ...p, users: p.users.map((u) => (u.id === user.id ? user : u)) });
    } else if (onPage || narrowsRoleOrState(current)) {
      // It left the filter, or may have entered it: the page and the total change.
      reloadSoon();
    }
  }

  /** A user deleted, seen in the feed or done on this page (whichever comes first). */
  function dropUser(userId: string): void {
    if (!feedState.noteRemoved(userId)) return;
    setExpanded((ids) => without(ids, userId));
    if (isOnPage(userId) || !narrowsRoleOrState(filterRef.current)) {
      setPage((p) => p && removeFromPage(p, userId));
    } else {
      reloadSoon();
    }
  }

  function applyTarget(target: TargetChange): void {
    if (target.targetType !== "user") return;
    // A new user (created, or an invite accepted): the total and maybe this page change.
    if (target.action === "user.create") return reloadSoon();
    if (target.state.case === "tombstone") return dropUser(target.targetId);
    if (target.state.case === "user") return showUser(target.state.value);
  }

  useEffect(() => {
    const unsubscribe = onFeed((event) => {
      if (event.kind === "reset") return reloadSoon();
      event.change.targets.forEach(applyTarget);
    });
    return () => {
      unsubscribe();
      clearTimeout(reloadTimer.current);
      exportAbort.current?.abort();
    };
  }, []);

  useEffect(() => {
    const mine = ++generation.current;
    const startedAt = performance.now();
    setLoading(true);
    fetchPage(filter, pageSize, tokens[tokens.length - 1] ?? "").then(
      (fetched) => {
        if (mine !== generation.current) return;
        setPage(feedState.merge(fetched, startedAt));
        setError("");
        setSearchError("");
        setLoading(false);
      },
      (caught: unknown) => {
        if (mine !== generation.current) return;
        const failure = failureOf(caught);
        const onPrefix = failure.fieldViolations.find((v) => v.field === "email_prefix");
        if (onPrefix !== undefined) setSearchError(`The search ${onPrefix.description}.`);
        else setError(`The users could not be loaded: ${describeFailure(failure)}`);
        setLoading(false);
      },
    );
  }, [filter, pageSize, tokens, reloads]);

  // Typing searches once the person pauses; Enter searches at once.
  useEffect(() => {
    if (searchText.trim() === filter.prefix) return;
    const timer = setTimeout(() => applyFilter({ prefix: searchText.trim() }), SEARCH_DELAY_MS);
    return () => clearTimeout(timer);
  }, [searchText]);

  async function exportCsv(): Promise<void> {
    exportAbort.current?.abort();
    const abort = new AbortController();
    exportAbort.current = abort;
    setExported(0);
    setExportError("");
    try {
      const users = await listAllUsers(filter, abort.signal, setExported);
      downloadText(usersCsv(users), exportFileName(filter), "text/csv;charset=utf-8");
      notify(`Exported ${countOf(users.length, "user")} to CSV.`);
    } catch (caught) {
      if (!abort.signal.aborted) setExportError(`The export failed: ${describeFailure(failureOf(caught))}`);
    } finally {
      if (exportAbort.current === abort) setExported(undefined);
    }
  }

  const searching = filter.prefix !== "";
  const me = identity.value?.user.id;
  return (
    <section aria-labelledby="users-title" class="users">
      <div class="users-head">
        <div>
          <h1 id="users-title">Users</h1>
          <p class="users-count" data-testid="users-total" role="status">
            {page === undefined ? "" : totalText(page, searching)}
          </p>
        </div>
        <div class="users-export">
          <button
            type="button"
            class="button"
            onClick={() => void exportCsv()}
            disabled={exported !== undefined}
            aria-describedby="users-export-note"
          >
            {exported === undefined ? "Export CSV" : `Exporting… ${COUNT.format(exported)}`}
          </button>
          <span id="users-export-note" class="muted users-export-note">
            Every user matching the filters
          </span>
        </div>
      </div>
      <ErrorText text={exportError} />
      <UserFilters
        filter={filter}
        searchText={searchText}
        searchError={searchError}
        pageSize={pageSize}
        onSearchText={setSearchText}
        onSearchNow={(text) => {
          setSearchText(text);
          applyFilter({ prefix: text.trim() });
        }}
        onFilter={applyFilter}
        onPageSize={(size) => {
          setPageSize(size);
          setTokens([""]);
        }}
      />
      <ErrorText text={error} />
      <div class="table-wrap" role="region" aria-labelledby="users-caption" tabIndex={0}>
        <table class="users-table" aria-busy={loading}>
          <caption id="users-caption" class="users-caption">
            {searching ? "Users, sorted by email while searching" : "Users, oldest first"}
          </caption>
          <thead>
            <tr>
              <th scope="col" aria-sort={searching ? "ascending" : undefined}>
                Email
              </th>
              <th scope="col">Role</th>
              <th scope="col">State</th>
              <th scope="col">Token key</th>
              <th scope="col" aria-sort={searching ? undefined : "ascending"}>
                Created (UTC)
              </th>
              <th scope="col">Last sign-in (UTC)</th>
            </tr>
          </thead>
          <tbody>
            {page === undefined ? (
              <MessageRow text={loading ? "Loading users…" : ""} />
            ) : page.users.length === 0 ? (
              <MessageRow text={emptyText(filter, page)} />
            ) : (
              page.users.map((user) => (
                <UserRows
                  key={user.id}
                  user={user}
                  isMe={user.id === me}
                  expanded={expanded.has(user.id)}
                  onToggle={() => setExpanded((ids) => toggled(ids, user.id))}
                  onChanged={showUser}
                  onDeleted={dropUser}
                />
              ))
            )}
          </tbody>
        </table>
      </div>
      <Pager
        pageNumber={tokens.length}
        pageCount={page?.total === undefined ? undefined : Math.max(tokens.length, Math.ceil(page.total / pageSize))}
        hasPrevious={tokens.length > 1}
        hasNext={page !== undefined && page.nextToken !== ""}
        loading={loading}
        onPrevious={() => setTokens((t) => (t.length > 1 ? t.slice(0, -1) : t))}
        onNext={() => {
          const next = pageRef.current?.nextToken ?? "";
          if (next !== "") setTokens((t) => [...t, next]);
        }}
      />
    </section>
  );
}

interface UserFiltersProps {
  filter: Filter;
  searchText: string;
  searchError: string;
  pageSize: number;
  onSearchText: (text: string) => void;
  onSearchNow: (text: string) => void;
  onFilter: (change: Partial<Filter>) => void;
  onPageSize: (size: number) => void;
}

function UserFilters(props: UserFiltersProps) {
  const { filter } = props;
  const search = useRef<HTMLInputElement>(null);
  return (
    <div class="toolbar users-toolbar">
      <form
        role="search"
        class="users-search"
        onSubmit={(event) => {
          event.preventDefault();
          props.onSearchNow(search.current?.value ?? props.searchText);
        }}
      >
        <label for="users-search">Search by email</label>
        <div class="users-search-row">
          <input
            ref={search}
            id="users-search"
            type="search"
            autocomplete="off"
            spellcheck={false}
            placeholder="Email starts with…"
            value={props.searchText}
            aria-invalid={props.searchError !== ""}
            aria-describedby={props.searchError !== "" ? "users-search-error" : undefined}
            onInput={(event) => props.onSearchText(event.currentTarget.value)}
          />
          <button type="submit" class="button">
            Search
          </button>
        </div>
        {props.searchError !== "" && (
          <p id="users-search-error" class="error-text" role="alert">
            {props.searchError}
          </p>
        )}
      </form>
      <div>
        <label for="users-role">Role</label>
        <select
          id="users-role"
          value={String(filter.role)}
          onChange={(event) => props.onFilter({ role: Number(event.currentTarget.value) as Role })}
        >
          <option value={String(Role.UNSPECIFIED)}>All roles</option>
          {ROLES.map((role) => (
            <option key={role} value={String(role)}>
              {roleName(role)}
            </option>
          ))}
        </select>
      </div>
      <div>
        <label for="users-state">State</label>
        <select
          id="users-state"
          value={String(filter.state)}
          onChange={(event) => props.onFilter({ state: Number(event.currentTarget.value) as UserState })}
        >
          <option value={String(UserState.UNSPECIFIED)}>All states</option>
          <option value={String(UserState.ACTIVE)}>Active</option>
          <option value={String(UserState.SUSPENDED)}>Suspended</option>
        </select>
      </div>
      <div class="users-page-size">
        <label for="users-page-size">Rows per page</label>
        <select
          id="users-page-size"
          value={String(props.pageSize)}
          onChange={(event) => props.onPageSize(Number(event.currentTarget.value))}
        >
          {PAGE_SIZES.map((size) => (
            <option key={size} value={String(size)}>
              {size}
            </option>
          ))}
        </select>
      </div>
    </div>
  );
}

interface UserRowsProps {
  user: User;
  isMe: boolean;
  expanded: boolean;
  onToggle: () => void;
  onChanged: (user: User) => void;
  onDeleted: (userId: string) => void;
}

/** A user's row and, when expanded, the row of its details and actions under it. */
function UserRows({ user, isMe, expanded, onToggle, onChanged, onDeleted }: UserRowsProps) {
  const detailsId = `user-details-${user.id}`;
  return (
    <>
      <tr class={expanded ? "user-row user-row-open" : "user-row"} data-user-id={user.id}>
        <td class="user-email">
          <button
            type="button"
            class="user-toggle"
            aria-expanded={expanded}
            aria-controls={expanded ? detailsId : undefined}
            onClick={onToggle}
          >
            <span class="user-toggle-mark" aria-hidden="true" />
            {user.email}
          </button>
          {isMe && <span class="muted user-me"> (you)</span>}
        </td>
        <td>
          <span class={roleClass(user.role)}>{roleName(user.role)}</span>
        </td>
        <td>
          <span class={user.state === UserState.SUSPENDED ? "state-suspended" : "state-active"}>
            {stateName(user.state)}
          </span>
        </td>
        <td>
          <code>{user.tokenKeyFingerprint}</code>
        </td>
        <td>
          <Time at={user.createdAt} />
        </td>
        <td>
          <Time at={user.lastLoginAt} />
        </td>
      </tr>
      {expanded && (
        <tr class="user-details-row" id={detailsId}>
          <td colSpan={COLUMNS}>
            <div class="user-details">
              <dl class="user-facts">
                <div>
                  <dt>User ID</dt>
                  <dd>
                    <code>{user.id}</code>
                  </dd>
                </div>
                <div>
                  <dt>Last changed</dt>
                  <dd>
                    <Time at={user.updatedAt} />
                  </dd>
                </div>
                <div>
                  <dt>Token key fingerprint</dt>
                  <dd>
                    <code>{user.tokenKeyFingerprint}</code>
                  </dd>
                </div>
                <div>
                  <dt>Last sign-in</dt>
                  <dd>
                    <Time at={user.lastLoginAt} />
                  </dd>
                </div>
              </dl>
              <UserActions user={user} onChanged={onChanged} onDeleted={onDeleted} />
            </div>
          </td>
        </tr>
      )}
    </>
  );
}

function Time({ at }: { at: Timestamp | undefined }) {
  if (at === undefined) return <span class="muted">never</span>;
  return <time dateTime={isoUtc(at)}>{utc(at)}</time>;
}

function MessageRow({ text }: { text: string }) {
  return (
    <tr>
      <td colSpan={COLUMNS} class="users-empty">
        {text}
      </td>
    </tr>
  );
}

interface PagerProps {
  pageNumber: number;
  pageCount: number | undefined;
  hasPrevious: boolean;
  hasNext: boolean;
  loading: boolean;
  onPrevious: () => void;
  onNext: () => void;
}

/**
 * Previous and Next stay focusable at either end (aria-disabled rather than
 * disabled), so a keyboard user paging to the last page keeps the focus.
 */
function Pager(props: PagerProps) {
  const of = props.pageCount === undefined ? "" : ` of ${COUNT.format(props.pageCount)}`;
  return (
    <nav class="pager" aria-label="Pages of users">
      <button
        type="button"
        class="button"
        aria-disabled={!props.hasPrevious}
        onClick={() => props.hasPrevious && props.onPrevious()}
      >
        Previous page
      </button>
      <span data-testid="users-page">
        Page {COUNT.format(props.pageNumber)}
        {of}
        {props.loading && <span class="muted"> · loading…</span>}
      </span>
      <button type="button" class="button" aria-disabled={!props.hasNext} onClick={() => props.hasNext && props.onNext()}>
        Next page
      </button>
    </nav>
  );
}

/**
 * What the feed said about users since a page was requested, so that a page
 * answered after a change does not bring back what the change replaced.
 */
class FeedState {
  private readonly removed = new Set<string>();
  private readonly latest = new Map<string, { user: User; at: number }>();

  noteUser(user: User): void {
    if (!this.removed.has(user.id)) this.latest.set(user.id, { user, at: performance.now() });
  }

  /** Records a deletion; false if it was recorded already. */
  noteRemoved(userId: string): boolean {
    if (this.removed.has(userId)) return false;
    this.removed.add(userId);
    this.latest.delete(userId);
    return true;
  }

  /** `page` (requested at `requestedAt`) with the feed's newer states and without deleted users. */
  merge(page: UserPage, requestedAt: number): UserPage {
    const users = page.users.filter((user) => !this.removed.has(user.id));
    const dropped = page.users.length - users.length;
    const merged = users.map((user) => {
      const seen = this.latest.get(user.id);
      return seen !== undefined && isNewer(seen.user, user) ? seen.user : user;
    });
    // A page requested after a change was read after it committed.
    for (const [id, seen] of this.latest) if (seen.at < requestedAt) this.latest.delete(id);
    const total = page.total === undefined ? undefined : Math.max(0, page.total - dropped);
    return { ...page, users: merged, total };
  }
}

/** One page of users; with a prefix, follows (a bounded number of) empty pages to one with users. */
async function fetchPage(filter: Filter, pageSize: number, pageToken: string): Promise<UserPage> {
  let token = pageToken;
  for (let followed = 0; ; followed++) {
    const answer = await guarded(() =>
      api.users.listUsers({
        pageSize,
        pageToken: token,
        role: filter.role,
        state: filter.state,
        emailPrefix: filter.prefix,
      }),
    );
    const done = answer.users.length > 0 || answer.nextPageToken === "" || followed + 1 >= MAX_EMPTY_PAGES;
    if (done) {
      const total = filter.prefix === "" ? answer.totalSize : undefined;
      return { users: answer.users, nextToken: answer.nextPageToken, total };
    }
    token = answer.nextPageToken;
  }
}

/** Every user matching `filter`, page by page; `progress` hears how many so far. */
async function listAllUsers(filter: Filter, signal: AbortSignal, progress: (count: number) => void): Promise<User[]> {
  const users: User[] = [];
  let pageToken = "";
  do {
    const answer = await guarded(() =>
      api.users.listUsers(
        {
          pageSize: EXPORT_PAGE_SIZE,
          pageToken,
          role: filter.role,
          state: filter.state,
          emailPrefix: filter.prefix,
        },
        { signal },
      ),
    );
    users.push(...answer.users);
    progress(users.length);
    pageToken = answer.nextPageToken;
  } while (pageToken !== "");
  return users;
}

const CSV_HEADER = ["Email", "Role", "State", "Token key fingerprint", "Created (UTC)", "Last sign-in (UTC)"];

/** The users as CSV (RFC 4180, CRLF), the table's columns, times in ISO 8601 UTC ("" for never). */
function usersCsv(users: readonly User[]): string {
  const rows = users.map((user) => [
    user.email,
    roleName(user.role),
    stateName(user.state),
    user.tokenKeyFingerprint,
    user.createdAt === undefined ? "" : isoUtc(user.createdAt),
    user.lastLoginAt === undefined ? "" : isoUtc(user.lastLoginAt),
  ]);
  return [CSV_HEADER, ...rows].map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

/**
 * One CSV field. A value a spreadsheet would read as a formula (= + - @, or
 * a leading tab or CR) gets a leading apostrophe, so opening the export
 * never runs an email address; then RFC 4180 quoting.
 */
function csvCell(value: string): string {
  const inert = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(inert) ? `"${inert.replace(/"/g, '""')}"` : inert;
}

/**
 * Saves `text` as a file. A blob: URL opened by <a download> is a download
 * (a navigation), which the console's CSP (connect-src, default-src) does
 * not govern.
 */
function downloadText(text: string, fileName: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function exportFileName(filter: Filter): string {
  const parts = ["users"];
  if (filter.role !== Role.UNSPECIFIED) parts.push(roleName(filter.role));
  if (filter.state !== UserState.UNSPECIFIED) parts.push(stateName(filter.state));
  if (filter.prefix !== "") parts.push("search");
  parts.push(new Date().toISOString().slice(0, 10));
  return `${parts.join("-")}.csv`;
}

function isoUtc(at: Timestamp): string {
  return timestampDate(at).toISOString();
}

function isNewer(a: User, b: User): boolean {
  const at = a.updatedAt;
  const bt = b.updatedAt;
  if (at === undefined || bt === undefined) return false;
  return at.seconds > bt.seconds || (at.seconds === bt.seconds && at.nanos > bt.nanos);
}

function matches(user: User, filter: Filter): boolean {
  return (
    (filter.role === Role.UNSPECIFIED || user.role === filter.role) &&
    (filter.state === UserState.UNSPECIFIED || user.state === filter.state)
  );
}

function narrowsRoleOrState(filter: Filter): boolean {
  return filter.role !== Role.UNSPECIFIED || filter.state !== UserState.UNSPECIFIED;
}

/** The page without the user, and the total one less (the user matched: it was shown, or nothing is filtered). */
function removeFromPage(page: UserPage, userId: string): UserPage {
  const users = page.users.filter((user) => user.id !== userId);
  const total = page.total === undefined ? undefined : Math.max(0, page.total - 1);
  return { ...page, users, total };
}

function totalText(page: UserPage, searching: boolean): string {
  if (searching || page.total === undefined) return "Matching users (not counted while searching)";
  return countOf(page.total, "user");
}

function emptyText(filter: Filter, page: UserPage): string {
  if (filter.prefix !== "" && page.nextToken !== "") {
    return `No users found yet whose email starts with “${filter.prefix}”: Next page searches further.`;
  }
  if (filter.prefix !== "") return `No users whose email starts with “${filter.prefix}”.`;
  if (narrowsRoleOrState(filter)) return "No users match these filters.";
  return "No users yet.";
}

function countOf(n: number, noun: string): string {
  return `${COUNT.format(n)} ${noun}${n === 1 ? "" : "s"}`;
}

function toggled(ids: ReadonlySet<string>, id: string): ReadonlySet<string> {
  const next = new Set(ids);
  if (!next.delete(id)) next.add(id);
  return next;
}

function without(ids: ReadonlySet<string>, id: string): ReadonlySet<string> {
  if (!ids.has(id)) return ids;
  const next = new Set(ids);
  next.delete(id);
  return next;
}
