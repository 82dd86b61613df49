// One's own sessions or API tokens as the page shows them: read page by
// page, then kept current from the change feed (one's own targets only: a
// nanoAdmin's feed carries everybody's). Changes that arrive while the list
// is being read are applied after the read, in order, so the list never
// goes back to a state older than the feed's.
import { useEffect, useRef, useState } from "preact/hooks";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { describeFailure, failureOf } from "../../errors";
import { onFeed } from "../../live";
import type { TargetChange } from "../../gen/usermgmt/v1/change_service_pb";
import { guarded, identity } from "../../session";

export interface Owned {
  id: string;
  userId: string;
  createdAt?: Timestamp | undefined;
  expiresAt?: Timestamp | undefined;
}

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

interface OwnListOptions<T extends Owned> {
  /** The feed's target type: "session" or "api_token". */
  targetType: string;
  /** One page of the caller's items after `pageToken`. */
  fetchPage: (pageToken: string) => Promise<Page<T>>;
  /** The item a feed target carries, if it carries one. */
  stateOf: (target: TargetChange) => T | undefined;
  /** Combines the item on the page (if any) with its newer state from the feed. */
  merge?: (shown: T | undefined, incoming: T) => T;
}

export interface OwnList<T> {
  /** Undefined until the first read answered. */
  items: T[] | undefined;
  error: string;
  upsert: (item: T) => void;
  remove: (id: string) => void;
}

/** At most this many pages are read (1,000 items each would be a lot of sessions). */
const MAX_PAGES = 20;

export function useOwnList<T extends Owned>(options: OwnListOptions<T>): OwnList<T> {
  const [items, setItems] = useState<T[] | undefined>(undefined);
  const [error, setError] = useState("");
  const opts = useRef(options);
  opts.current = options;

  useEffect(() => {
    let alive = true;
    // Changes seen while a read is under way; null when no read is.
    let queued: TargetChange[] | null = null;

    const apply = (list: T[], targets: TargetChange[]): T[] =>
      targets.reduce((acc, target) => applyTarget(acc, target, opts.current), list);

    async function load(): Promise<void> {
      queued = [];
      try {
        const read = await readAll(opts.current.fetchPage);
        if (!alive) return;
        setItems(apply(read, queued));
        setError("");
      } catch (caught) {
        if (alive) setError(describeFailure(failureOf(caught)));
      } finally {
        queued = null;
      }
    }

    const stop = onFeed((event) => {
      if (event.kind === "reset") return void load();
      const mine = event.change.targets.filter((t) => t.targetType === opts.current.targetType);
      if (mine.length === 0) return;
      if (queued !== null) queued.push(...mine);
      else setItems((list) => (list === undefined ? list : apply(list, mine)));
    });
    void load();
    return () => {
      alive = false;
      stop();
    };
  }, []);

  return {
    items: items?.filter(stillLive),
    error,
    upsert: (item) => setItems((list) => sorted(upsertInto(list ?? [], item, opts.current.merge))),
    remove: (id) => setItems((list) => list?.filter((item) => item.id !== id)),
  };
}

async function readAll<T>(fetchPage: (pageToken: string) => Promise<Page<T>>): Promise<T[]> {
  const all: T[] = [];
  let pageToken = "";
  for (let read = 0; read < MAX_PAGES; read++) {
    const page = await guarded(() => fetchPage(pageToken));
    all.push(...page.items);
    if (page.nextPageToken === "") break;
    pageToken = page.nextPageToken;
  }
  return all;
}

function applyTarget<T extends Owned>(list: T[], target: TargetChange, options: OwnListOptions<T>): T[] {
  if (target.state.case === "tombstone") return list.filter((item) => item.id !== target.targetId);
  const state = options.stateOf(target);
  if (state === undefined || state.userId !== identity.value?.user.id) return list;
  return sorted(upsertInto(list, state, options.merge));
}

function upsertInto<T extends Owned>(list: T[], item: T, merge: OwnListOptions<T>["merge"]): T[] {
  const shown = list.find((existing) => existing.id === item.id);
  const next = merge === undefined ? item : merge(shown, item);
  return shown === undefined ? [...list, next] : list.map((existing) => (existing.id === item.id ? next : existing));
}

/** Oldest first, as the service lists them. */
function sorted<T extends Owned>(list: T[]): T[] {
  const at = (item: T): number => (item.createdAt === undefined ? 0 : timestampMs(item.createdAt));
  return [...list].sort((a, b) => at(a) - at(b));
}

/** Sessions and tokens stop existing at their expiry without a change. */
function stillLive(item: Owned): boolean {
  return item.expiresAt === undefined || timestampMs(item.expiresAt) > Date.now();
}
