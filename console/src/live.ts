// The page follows the organisation's change feed: every committed change
// the caller may see arrives within the service's notification latency.
// Views subscribe to the changes; when the feed cannot prove it missed
// nothing (a gap, or a resume the service refuses) every view reloads.
import { signal } from "@preact/signals";
import { Code } from "@connectrpc/connect";
import { api } from "./api";
import { failureOf } from "./errors";
import { ChangeStart, type Change } from "./gen/usermgmt/v1/change_service_pb";
import { endSessionIfRevoked, identity, reloadIdentity } from "./session";

export type FeedEvent = { kind: "change"; change: Change } | { kind: "reset" };
type Listener = (event: FeedEvent) => void;

/** Whether the watch is open (shown in the header). */
export const live = signal(false);

const listeners = new Set<Listener>();
let running: AbortController | undefined;

/** Calls `listener` with every change and every reset; returns the unsubscribe. */
export function onFeed(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Opens the watch (once per session). */
export function startFeed(): void {
  if (running !== undefined) return;
  running = new AbortController();
  void follow(running.signal);
}

/** Closes the watch. */
export function stopFeed(): void {
  running?.abort();
  running = undefined;
  live.value = false;
}

async function follow(abort: AbortSignal): Promise<void> {
  let resumeToken = "";
  let position: bigint | undefined;
  let retryMs = 500;
  // Set at first and when the feed could not resume: the views reload once
  // the new watch is open, so that a change committed between their first
  // read and the watch's start is not missed.
  let resetPending = true;
  while (!abort.aborted) {
    try {
      // A resume names where to go on from; only a fresh watch says where to start.
      const start = resumeToken === "" ? ChangeStart.NOW : ChangeStart.UNSPECIFIED;
      const stream = api.changes.watchChanges(
        { resumeToken, start, heartbeatInterval: { seconds: 10n } },
        { signal: abort },
      );
      for await (const message of stream) {
        live.value = true;
        retryMs = 500;
        if (resetPending) {
          resetPending = false;
          publish({ kind: "reset" });
        }
        const event = message.event;
        if (event.case === "change") {
          const change = event.value;
          if (position !== undefined && change.previousSequence !== position) {
            position = undefined;
            publish({ kind: "reset" });
          }
          position = change.sequence;
          resumeToken = change.resumeToken;
          await noticeOwnChanges(change);
          publish({ kind: "change", change });
        } else if (event.case === "heartbeat") {
          if (position !== undefined && event.value.sequence < position) publish({ kind: "reset" });
          position = event.value.sequence;
          resumeToken = event.value.resumeToken;
        }
      }
    } catch (error) {
      if (abort.aborted) return;
      live.value = false;
      const failure = failureOf(error);
      if (endSessionIfRevoked(failure)) return;
      if (failure.code === Code.FailedPrecondition || failure.code === Code.InvalidArgument) {
        // The service cannot resume there (pruned, or from another
        // deployment): start afresh and let every view reload.
        resumeToken = "";
        position = undefined;
        resetPending = true;
      }
    }
    if (abort.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, retryMs));
    retryMs = Math.min(retryMs * 2, 10_000);
  }
}

/**
 * A change to the caller's own user or organisation may change what the
 * caller may do: read the identity again before any view redraws, so the
 * page never shows a revoked role as current.
 */
async function noticeOwnChanges(change: Change): Promise<void> {
  const me = identity.value?.user.id;
  const concernsMe = change.targets.some(
    (target) => (target.targetType === "user" && target.targetId === me) || target.targetType === "organisation",
  );
  if (!concernsMe) return;
  try {
    await reloadIdentity();
  } catch {
    // reloadIdentity ended the session if the credentials no longer stand.
  }
}

function publish(event: FeedEvent): void {
  listeners.forEach((listener) => listener(event));
}
