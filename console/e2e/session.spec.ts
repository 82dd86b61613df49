// The session in the browser: refreshed in the background across many
// access-token lifetimes, its tokens never written where script or a later
// visitor could read them, and ended at once when revoked elsewhere.
import type { BrowserContext, Page } from "@playwright/test";
import { expect, Role, signIn, startServer, test, watchForProblems, type Server } from "./fixtures";
import { expectAccessible } from "./a11y";

const REFRESH = "/usermgmt.v1.AuthService/Refresh";
const REVOKED =
  "Your access was revoked: an administrator changed your role or renewed your token key, or your password changed. Sign in again.";

/** Every bearer token the page sent, in order. */
function bearerTokensOf(page: Page): string[] {
  const tokens: string[] = [];
  page.on("request", (request) => {
    const header = request.headers()["authorization"];
    if (header?.startsWith("Bearer ") === true && !tokens.includes(header.slice(7))) tokens.push(header.slice(7));
  });
  return tokens;
}

/** What the page could leave behind for script: every storage value and cookie, and IndexedDB's databases. */
async function whatScriptCanRead(page: Page) {
  return await page.evaluate(async () => {
    const values = (storage: Storage) =>
      Array.from({ length: storage.length }, (_, i) => `${storage.key(i)}=${storage.getItem(storage.key(i) ?? "")}`);
    return {
      localStorage: values(window.localStorage),
      sessionStorage: values(window.sessionStorage),
      cookie: document.cookie,
      indexedDB: (await indexedDB.databases()).map((db) => db.name ?? ""),
      caches: await caches.keys(),
    };
  });
}

async function expectNothingStored(page: Page, context: BrowserContext, tokens: string[]): Promise<void> {
  const stored = await whatScriptCanRead(page);
  expect(stored).toEqual({ localStorage: [], sessionStorage: [], cookie: "", indexedDB: [], caches: [] });
  const everything = JSON.stringify(stored);
  for (const token of tokens) expect(everything).not.toContain(token);
  expect(await context.cookies()).toEqual([]);
}

async function renewTokenKey(server: Server, userId: string): Promise<void> {
  const admin = server.api(await server.tokenOf(server.admin));
  const first = await admin.users.renewTokenKey({ userId });
  if (first.outcome.case !== "confirmationRequired") throw new Error("RenewTokenKey asked no confirmation");
  await admin.users.renewTokenKey({ userId, confirmationToken: first.outcome.value.confirmationToken });
}

test("the session is refreshed in the background across several token lifetimes, and its tokens stay in memory", async ({
  browser,
  problems,
}) => {
  // Access tokens live 3 s: the page must refresh every ~2.4 s to go on working.
  const { server, stop } = await startServer(["--access-token-ttl-secs", "3"]);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    watchForProblems(page, problems);
    let refreshes = 0;
    page.on("request", (request) => {
      if (request.url().endsWith(REFRESH)) refreshes += 1;
    });
    const tokens = bearerTokensOf(page);
    await signIn(page, server, server.admin);
    expect(tokens.length).toBeGreaterThan(0);
    await expectNothingStored(page, context, tokens);

    await expect.poll(() => refreshes, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
    const refreshed = await server.sql<{ last_refreshed_at: Date | null }>(
      "SELECT last_refreshed_at FROM sessions WHERE user_id = $1 AND ended_at IS NULL",
      [server.admin.userId],
    );
    expect(refreshed).toHaveLength(1);
    expect(refreshed[0]?.last_refreshed_at).not.toBeNull();

    // More than two lifetimes after sign-in the first token is long dead:
    // a navigation loads with the refreshed one, and the page is still live.
    await page.getByRole("link", { name: "Audit log" }).click();
    const refreshRows = page
      .getByTestId("audit-row")
      .filter({ has: page.locator("code.audit-code", { hasText: /^session\.refresh$/ }) });
    await expect.poll(() => refreshRows.count()).toBeGreaterThanOrEqual(2);
    await expect(page.getByTestId("me-email")).toHaveText(server.admin.email);
    await expect(page.getByText("Live updates on")).toBeAttached();
    expect(tokens.length).toBeGreaterThanOrEqual(3);
    await expectNothingStored(page, context, tokens);
  } finally {
    await context.close();
    await stop();
  }
});

test("a tokenKey renewed by an admin sends the open page to sign-in within a second, saying why", async ({
  server,
  page,
}) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, user);
  await expect(page.getByText("Live updates on")).toBeAttached();

  await renewTokenKey(server, user.userId);
  await expect(page.getByTestId("sign-in-notice")).toHaveText(REVOKED, { timeout: 1_000 });
  await expect(page.getByTestId("me-email")).toHaveCount(0);
  await expect(page.getByLabel("Email")).toBeVisible();
  await expectAccessible(page, "sign-in after a revocation");
});

test("a session ended from another browser sends this page to sign-in within a second", async ({
  server,
  page,
  newPage,
}) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, user);
  await expect(page.getByText("Live updates on")).toBeAttached();
  const other = await newPage();
  await signIn(other, server, user);

  // The user ends the first browser's session (the older of the two
  // Chromium sessions) from elsewhere.
  const sessionOfPage = await server.sql<{ id: string }>(
    "SELECT id FROM sessions WHERE user_id = $1 AND ended_at IS NULL AND user_agent LIKE '%Chrom%' ORDER BY created_at LIMIT 1",
    [user.userId],
  );
  expect(sessionOfPage).toHaveLength(1);
  await server.api(await server.tokenOf(user)).sessions.revokeSession({ sessionId: sessionOfPage[0]!.id });
  await expect(page.getByTestId("sign-in-notice")).toHaveText(REVOKED, { timeout: 1_000 });
  // The other browser's session stands.
  await expect(other.getByTestId("me-email")).toHaveText(user.email);
});
