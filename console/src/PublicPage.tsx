// The pages a mailed link opens without a session: /accept-invite#token=…
// and /reset-password#token=…. The token is read once, when the page loads,
// and taken out of the address bar (and its history entry) at once: from
// then on it lives only in this page's memory.
import { signal } from "@preact/signals";
import { AcceptInvite } from "./AcceptInvite";
import { ResetPassword } from "./ResetPassword";

export interface PublicRoute {
  page: "accept-invite" | "reset-password";
  /** The link's token; empty when the link came without one. */
  token: string;
}

function readPublicRoute(): PublicRoute | undefined {
  const path = window.location.pathname.replace(/\/+$/, "");
  const page = path === "/accept-invite" ? "accept-invite" : path === "/reset-password" ? "reset-password" : undefined;
  if (page === undefined) return undefined;
  const token = new URLSearchParams(window.location.hash.replace(/^#/, "")).get("token") ?? "";
  if (window.location.hash !== "") window.history.replaceState(null, "", window.location.pathname);
  return { page, token };
}

/** The public page this document was opened at, until the person leaves it. */
export const publicRoute = signal<PublicRoute | undefined>(readPublicRoute());

// Another link pasted over this one's address changes only the fragment: the
// same document, so no load reads it; read it here.
window.addEventListener("hashchange", () => {
  const route = readPublicRoute();
  if (route !== undefined && route.token !== "") publicRoute.value = route;
});

/** Leaves the public page for the console at `address` (e.g. "/#/overview"). */
export function leavePublicPage(address: string): void {
  window.history.replaceState(null, "", address);
  publicRoute.value = undefined;
}

export function PublicPage({ route }: { route: PublicRoute }) {
  if (route.page === "accept-invite") {
    return <AcceptInvite key={route.token} token={route.token} onJoined={() => leavePublicPage("/#/overview")} />;
  }
  return <ResetPassword key={route.token} token={route.token} onChanged={() => leavePublicPage("/")} />;
}
