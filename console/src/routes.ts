// The console's pages, addressed by the URL's fragment (#/users), so the
// server serves one document and the back button works.
import { signal } from "@preact/signals";

export type Page = "overview" | "users" | "invites" | "account" | "audit";

export interface PageDef {
  page: Page;
  label: string;
  /** The permission the page needs; undefined: every member. */
  needs?: string;
}

export const PAGES: readonly PageDef[] = [
  { page: "overview", label: "Organisation" },
  { page: "users", label: "Users", needs: "users.read" },
  { page: "invites", label: "Invites", needs: "users.invite" },
  { page: "audit", label: "Audit log", needs: "audit.read" },
  { page: "account", label: "My account" },
];

function pageOfHash(): Page {
  const name = window.location.hash.replace(/^#\/?/, "").split("?")[0];
  return PAGES.find((p) => p.page === name)?.page ?? "overview";
}

export const currentPage = signal<Page>(pageOfHash());
window.addEventListener("hashchange", () => {
  currentPage.value = pageOfHash();
});

export function hrefOf(page: Page): string {
  return `#/${page}`;
}
