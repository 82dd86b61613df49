// One's signed-in sessions: where and when each signed in, the current one
// marked, and ending one (ending the current one signs this page out).
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api";
import { utc } from "../../format";
import type { Session } from "../../gen/usermgmt/v1/resources_pb";
import { endSession, identity } from "../../session";
import { ConfirmDialog } from "../../ui/ConfirmDialog";
import { ErrorText, notify } from "../../ui/Notice";
import { useOwnList } from "./ownList";
import { shortUserAgent } from "./userAgent";

export const ENDED_HERE = "You ended this session. Sign in again to continue.";

export function Sessions() {
  const sessions = useOwnList<Session>({
    targetType: "session",
    fetchPage: async (pageToken) => {
      const page = await api.sessions.listSessions({ pageSize: 100, pageToken });
      return { items: page.sessions, nextPageToken: page.nextPageToken };
    },
    stateOf: (target) => (target.state.case === "session" ? target.state.value : undefined),
    // The feed's copy of a session does not know which one is this page's.
    merge: (shown, incoming) => ({ ...incoming, current: shown?.current === true || isThisPage(incoming) }),
  });
  const [ending, setEnding] = useState<Session | undefined>(undefined);
  const heading = useRef<HTMLHeadingElement>(null);
  const [refocus, setRefocus] = useState(0);
  useEffect(() => refocusIfLost(heading.current), [refocus]);

  function ended(session: Session, alreadyOver: boolean): void {
    sessions.remove(session.id);
    setEnding(undefined);
    setRefocus((n) => n + 1);
    notify(alreadyOver ? "That session had already ended." : "The session was ended.");
  }

  return (
    <section class="card account-section" aria-labelledby="sessions-title">
      <h2 id="sessions-title" ref={heading} tabIndex={-1}>
        Sessions
      </h2>
      <p class="muted">
        Every browser or app signed in as you. End one you do not recognise: it is signed out on its next request.
      </p>
      <ErrorText text={sessions.error} />
      {sessions.items === undefined ? (
        sessions.error === "" && <p class="muted">Loading sessions…</p>
      ) : sessions.items.length === 0 ? (
        <p class="muted">No sessions.</p>
      ) : (
        <SessionTable sessions={sessions.items} onEnd={setEnding} />
      )}
      {ending !== undefined && (
        <EndSessionDialog session={ending} onEnded={ended} onClose={() => setEnding(undefined)} />
      )}
    </section>
  );
}

function isThisPage(session: Session): boolean {
  const mine = identity.value?.sessionId;
  return mine !== undefined && mine !== "" && session.id === mine;
}

function isCurrent(session: Session): boolean {
  return session.current || isThisPage(session);
}

/** The row of a removed item held the focus: put it somewhere sensible. */
export function refocusIfLost(fallback: HTMLElement | null): void {
  const active = document.activeElement;
  if (active === null || active === document.body || !active.isConnected) fallback?.focus();
}

function SessionTable({ sessions, onEnd }: { sessions: Session[]; onEnd: (session: Session) => void }) {
  return (
    <div class="table-wrap">
      <table class="account-table" data-testid="sessions">
        <thead>
          <tr>
            <th scope="col">Client</th>
            <th scope="col">Address</th>
            <th scope="col">Signed in</th>
            <th scope="col">Last refreshed</th>
            <th scope="col">Expires</th>
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {sessions.map((session) => (
            <SessionRow key={session.id} session={session} onEnd={onEnd} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

function SessionRow({ session, onEnd }: { session: Session; onEnd: (session: Session) => void }) {
  const current = isCurrent(session);
  const client = shortUserAgent(session.userAgent);
  return (
    <tr data-testid={`session-${session.id}`} class={current ? "session-current" : undefined}>
      <td class="session-client">
        <details class="user-agent">
          <summary title={session.userAgent}>{client}</summary>
          <span class="user-agent-full">{session.userAgent || "The client sent no user agent."}</span>
        </details>
        {current && <span class="badge-current">This session</span>}
      </td>
      <td>{session.clientAddress || "—"}</td>
      <td class="nowrap">{utc(session.createdAt)}</td>
      <td class="nowrap">{utc(session.lastRefreshedAt)}</td>
      <td class="nowrap">{utc(session.expiresAt)}</td>
      <td>
        <button type="button" class="button button-small" onClick={() => onEnd(session)}>
          {current ? "End this session" : "End session"}
          <span class="visually-hidden">
            {` ${client}, signed in ${utc(session.createdAt)}`}
          </span>
        </button>
      </td>
    </tr>
  );
}

interface EndSessionDialogProps {
  session: Session;
  onEnded: (session: Session, alreadyOver: boolean) => void;
  onClose: () => void;
}

function EndSessionDialog({ session, onEnded, onClose }: EndSessionDialogProps) {
  const current = isCurrent(session);
  return (
    <ConfirmDialog
      title={current ? "End this session?" : "End the session?"}
      actionLabel={current ? "End this session" : "End session"}
      busyLabel="Ending…"
      action={() => api.sessions.revokeSession({ sessionId: session.id })}
      onDone={(alreadyOver) => {
        if (current && !alreadyOver) endSession(ENDED_HERE);
        else onEnded(session, alreadyOver);
      }}
      onClose={onClose}
    >
      <p>
        {current
          ? "This is the session of this page: ending it signs you out here. Your other sessions keep working."
          : `${shortUserAgent(session.userAgent)} at ${session.clientAddress || "an unknown address"}, signed in ${utc(session.createdAt)}, is signed out on its next request.`}
      </p>
    </ConfirmDialog>
  );
}
