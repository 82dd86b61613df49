// The signed-in person: the session's tokens (in memory only, so nothing is
// left behind in the browser when the tab closes), the identity WhoAmI
// answers, and the background refresh that keeps the session alive.
import { signal, computed } from "@preact/signals";
import { Code } from "@connectrpc/connect";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { api, useAccessToken } from "./api";
import { failureOf, signedOutMessage, type CallFailure } from "./errors";
import type { Organisation, User } from "./gen/usermgmt/v1/resources_pb";
import { Role } from "./gen/usermgmt/v1/resources_pb";

export interface Identity {
  user: User;
  organisation: Organisation | undefined;
  role: Role;
  permissions: ReadonlySet<string>;
  sessionId: string;
}

/** The signed-in person, or undefined on the sign-in page. */
export const identity = signal<Identity | undefined>(undefined);
/** Why the person is on the sign-in page again (empty on the first visit). */
export const signInNotice = signal("");
/** The permissions of the caller's current role. */
export const permissions = computed(() => identity.value?.permissions ?? new Set<string>());

let refreshToken: string | undefined;
let sessionId = "";
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
const endListeners = new Set<() => void>();

/** Whether the caller's current role holds `permission`. */
export function can(permission: string): boolean {
  return permissions.value.has(permission);
}

/** Runs `listener` whenever the session ends. */
export function onSessionEnd(listener: () => void): () => void {
  endListeners.add(listener);
  return () => endListeners.delete(listener);
}

interface Grant {
  accessToken: string;
  expiresAt?: Timestamp | undefined;
  refreshToken: string;
  sessionId?: string;
}

/** Signs in; throws the call's error (the sign-in page shows it). */
export async function signIn(email: string, password: string, organisationId: string): Promise<void> {
  const grant = await api.auth.login({ email, password, organisationId });
  adopt(grant);
  await reloadIdentity();
  signInNotice.value = "";
}

/** Starts the session a grant opened outside the sign-in form (an accepted invite). */
export async function adoptGrant(grant: Grant): Promise<void> {
  adopt(grant);
  await reloadIdentity();
  signInNotice.value = "";
}

/** Ends the session at the service, then here. */
export async function signOut(): Promise<void> {
  try {
    await api.auth.logout({});
  } finally {
    endSession("You signed out.");
  }
}

/** Forgets the session here and returns to the sign-in page with `notice`. */
export function endSession(notice: string): void {
  if (refreshTimer !== undefined) clearTimeout(refreshTimer);
  refreshTimer = undefined;
  refreshToken = undefined;
  useAccessToken(undefined);
  const wasSignedIn = identity.value !== undefined;
  identity.value = undefined;
  signInNotice.value = notice;
  if (wasSignedIn) endListeners.forEach((listener) => listener());
}

/** Reads the caller's identity again (role and permissions as they are now). */
export async function reloadIdentity(): Promise<void> {
  const me = await guarded(() => api.auth.whoAmI({}));
  if (me.user === undefined) throw new Error("WhoAmI answered without a user");
  identity.value = {
    user: me.user,
    organisation: me.organisation,
    role: me.role,
    permissions: new Set(me.permissions),
    sessionId,
  };
}

/**
 * Runs a call with the session's credentials. When the service says the
 * credentials no longer stand (UNAUTHENTICATED), the session ends here too;
 * when it refuses a permission, the identity is read again so that the page
 * stops offering what the current role does not hold.
 */
export async function guarded<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    const failure = failureOf(error);
    if (failure.code === Code.Unauthenticated && identity.value !== undefined) {
      endSession(signedOutMessage(failure));
    } else if (failure.code === Code.PermissionDenied && identity.value !== undefined) {
      void reloadIdentity().catch(() => undefined);
    }
    throw error;
  }
}

/** Ends the session when `failure` says it is over; true if it did. */
export function endSessionIfRevoked(failure: CallFailure): boolean {
  if (failure.code !== Code.Unauthenticated || identity.value === undefined) return false;
  endSession(signedOutMessage(failure));
  return true;
}

function adopt(grant: Grant): void {
  useAccessToken(grant.accessToken);
  refreshToken = grant.refreshToken;
  if (grant.sessionId !== undefined) sessionId = grant.sessionId;
  scheduleRefresh(grant.expiresAt);
}

/** Refreshes at four fifths of the access token's lifetime. */
function scheduleRefresh(expiresAt: Timestamp | undefined): void {
  if (refreshTimer !== undefined) clearTimeout(refreshTimer);
  const lifetime = expiresAt === undefined ? 60_000 : timestampMs(expiresAt) - Date.now();
  refreshTimer = setTimeout(() => void refreshNow(), Math.max(1_000, lifetime * 0.8));
}

/** Exchanges the refresh token for new tokens of the same session. */
export async function refreshNow(): Promise<void> {
  if (refreshToken === undefined) return;
  try {
    const grant = await api.auth.refresh({ refreshToken });
    adopt(grant);
  } catch (error) {
    const failure = failureOf(error);
    if (failure.code === Code.Unauthenticated) {
      endSession(signedOutMessage(failure));
    } else {
      refreshTimer = setTimeout(() => void refreshNow(), 5_000);
    }
  }
}

export const ROLE_NAMES: Record<Role, string> = {
  [Role.UNSPECIFIED]: "—",
  [Role.NANO_ADMIN]: "nanoAdmin",
  [Role.NANO_USER]: "nanoUser",
  [Role.NANO_READ_ONLY]: "nanoReadOnly",
};
