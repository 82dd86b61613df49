// The console's frame: the header with the organisation and the signed-in
// person, the navigation the caller's role allows, and the current page.
import { useEffect } from "preact/hooks";
import { SignIn } from "./SignIn";
import { PublicPage, publicRoute } from "./PublicPage";
import { live, startFeed, stopFeed } from "./live";
import { can, identity, onSessionEnd, signOut } from "./session";
import { currentPage, hrefOf, PAGES, type Page } from "./routes";
import { roleClass, roleName } from "./format";
import { Notices } from "./ui/Notice";
import { Overview } from "./views/Overview";
import { Users } from "./views/Users";
import { Invites } from "./views/Invites";
import { Account } from "./views/Account";
import { Audit } from "./views/Audit";

onSessionEnd(stopFeed);

export function App() {
  if (publicRoute.value !== undefined) return <PublicPage route={publicRoute.value} />;
  const me = identity.value;
  if (me === undefined) return <SignIn />;
  return <Console />;
}

function Console() {
  const me = identity.value;
  useEffect(() => {
    startFeed();
  }, []);
  if (me === undefined) return null;
  const allowed = PAGES.filter((p) => p.needs === undefined || can(p.needs));
  const page = allowed.some((p) => p.page === currentPage.value) ? currentPage.value : "overview";
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <div class="topbar-brand">
          <span class="brand">nanoStream Cloud</span>
          <span class="topbar-org" data-testid="organisation-name">
            {me.organisation?.name ?? ""}
          </span>
        </div>
        <div class="topbar-me">
          <span class={`live-dot ${live.value ? "live-on" : "live-off"}`} title={live.value ? "Live" : "Reconnecting"}>
            <span class="visually-hidden">{live.value ? "Live updates on" : "Live updates reconnecting"}</span>
          </span>
          <span data-testid="me-email">{me.user.email}</span>
          <span class={roleClass(me.role)} data-testid="me-role">
            {roleName(me.role)}
          </span>
          <button type="button" class="button button-quiet" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <nav class="tabs" aria-label="Sections">
        {allowed.map((p) => (
          <a key={p.page} href={hrefOf(p.page)} class="tab" aria-current={p.page === page ? "page" : undefined}>
            {p.label}
          </a>
        ))}
      </nav>
      <main id="main" class="content" tabIndex={-1}>
        <PageView page={page} />
      </main>
      <Notices />
    </>
  );
}

function PageView({ page }: { page: Page }) {
  switch (page) {
    case "overview":
      return <Overview />;
    case "users":
      return <Users />;
    case "invites":
      return <Invites />;
    case "account":
      return <Account />;
    case "audit":
      return <Audit />;
  }
}
