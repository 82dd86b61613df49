// One's own account: the profile, sessions (the current one marked, ending
// one ends it at the service and signs its page out), changing the
// password, and personal API tokens (created once-shown, used, listed,
// revoked) — in the browser against a real server.
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Locator, Page } from "@playwright/test";
import { expectAccessible, tabTo } from "./a11y";
import { expect, PASSWORD, Role, signIn, startServer, test as base, type Person, type Server } from "./fixtures";
import { failureOf } from "../src/errors";
import { UserService } from "../src/gen/usermgmt/v1/user_service_pb";

// Token uses are written every 200 ms here (5 s by default), so that a
// token's first use reaches the page's list within the test's patience.
const test = base.extend<{ server: Server }>({
  // eslint-disable-next-line no-empty-pattern
  server: async ({}, use) => {
    const { server, stop } = await startServer(["--api-token-usage-flush-ms", "200"]);
    await use(server);
    await stop();
  },
});

const REVOKED_NOTICE =
  "Your access was revoked: an administrator changed your role or renewed your token key, or your password changed. Sign in again.";
const ENDED_HERE = "You ended this session. Sign in again to continue.";
const PASSWORD_CHANGED =
  "Your password was changed. Your other sessions were signed out; this one stays signed in. Your personal API tokens keep working.";
const NEW_PASSWORD = "a new and longer passphrase";

async function openAccount(page: Page): Promise<void> {
  await page.getByRole("link", { name: "My account" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "My account" })).toBeVisible();
}

/** The call's gRPC code and ErrorInfo reason, or "OK". */
async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "OK";
  } catch (error) {
    const failure = failureOf(error);
    return `${Code[failure.code]} ${failure.reason}`;
  }
}

async function liveSessionIds(server: Server, person: Person): Promise<string[]> {
  const rows = await server.sql<{ id: string }>(
    "SELECT id FROM sessions WHERE user_id = $1 AND ended_at IS NULL ORDER BY created_at",
    [person.userId],
  );
  return rows.map((row) => row.id);
}

/** Another member, invited with the organisation's API key: no admin session opens for it. */
async function memberInvitedByApiKey(server: Server, email: string): Promise<Person> {
  const transport = createGrpcWebTransport({
    baseUrl: server.url,
    interceptors: [(next) => (request) => (request.header.set("x-bintu-apikey", server.apiKey), next(request))],
  });
  const invite = await createClient(UserService, transport).createInvite({ email, role: Role.NANO_USER });
  const accepted = await server.api().auth.acceptInvite({ inviteToken: invite.inviteToken, password: PASSWORD });
  return { email, password: PASSWORD, userId: accepted.userId };
}

/** Presses Tab until `target` has the focus. */
async function tabUntil(page: Page, target: Locator, limit = 60): Promise<void> {
  for (let i = 0; i < limit; i++) {
    if (await target.evaluate((element) => element === document.activeElement).catch(() => false)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`${target.toString()} never got the focus in ${limit} Tab presses`);
}

test("the profile shows who one is and what one's role may do", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, user);
  await openAccount(page);
  const me = await server.api(await server.tokenOf(user)).auth.whoAmI({});
  await expect(page.getByTestId("profile-email")).toHaveText(user.email);
  await expect(page.getByTestId("profile-role")).toHaveText("nanoUser");
  await expect(page.getByTestId("profile-fingerprint")).toHaveText(me.user?.tokenKeyFingerprint ?? "?");
  await expect(page.getByTestId("profile-last-login")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);
  await page.getByText(`What nanoUser may do (${me.permissions.length} permissions)`).click();
  const listed = page.getByTestId("profile-permissions").locator("code");
  await expect(listed).toHaveCount(me.permissions.length);
  expect((await listed.allTextContents()).sort()).toEqual([...me.permissions].sort());
  await expectAccessible(page, "my account");
});

test("sessions: this one is marked, another appears and disappears live, ending one signs its page out", async ({
  server,
  page,
  newPage,
}) => {
  const admin = server.admin;
  const someone = await memberInvitedByApiKey(server, "someone@example.com");
  await signIn(page, server, admin);
  await openAccount(page);
  const [here] = await liveSessionIds(server, admin);
  const table = page.getByTestId("sessions");
  await expect(table.locator("tbody tr")).toHaveCount(1);

  // A second sign-in, in another browser: it appears on the first page.
  const other = await newPage();
  await signIn(other, server, admin);
  const sessionIds = await liveSessionIds(server, admin);
  expect(sessionIds).toHaveLength(2);
  const there = sessionIds.find((id) => id !== here) ?? "";
  await expect(table.locator("tbody tr")).toHaveCount(2);
  await expect(page.getByTestId(`session-${here}`)).toContainText("This session");
  await expect(page.getByTestId(`session-${there}`)).not.toContainText("This session");
  await expect(page.getByTestId(`session-${there}`)).toContainText("Headless Chrome");
  await expect(page.getByTestId(`session-${there}`)).toContainText("127.0.0.1");
  await expectAccessible(page, "my account with two sessions");

  // A sign-in and its end elsewhere (a script) show live too; another
  // member's sign-in, which this admin's feed also carries, does not.
  const theirs = await server.api().auth.login({ email: someone.email, password: someone.password });
  const scripted = await server.api().auth.login({ email: admin.email, password: admin.password });
  await expect(page.getByTestId(`session-${scripted.sessionId}`)).toBeVisible();
  await expect(page.getByTestId(`session-${theirs.sessionId}`)).toHaveCount(0);
  await server.api(scripted.accessToken).auth.logout({});
  await expect(page.getByTestId(`session-${scripted.sessionId}`)).toHaveCount(0);

  // Cancelling changes nothing.
  await page.getByTestId(`session-${there}`).getByRole("button", { name: "End session" }).click();
  const dialog = page.getByRole("dialog", { name: "End the session?" });
  await expect(dialog).toBeVisible();
  await expectAccessible(page, "end session dialog");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(dialog).toHaveCount(0);
  expect(await liveSessionIds(server, admin)).toEqual(sessionIds);

  // Ending the other session: gone here, in the database, and its page is
  // sent to sign in.
  await page.getByTestId(`session-${there}`).getByRole("button", { name: "End session" }).click();
  await dialog.getByRole("button", { name: "End session" }).click();
  await expect(page.getByTestId(`session-${there}`)).toHaveCount(0);
  await expect(page.getByRole("status").filter({ hasText: "The session was ended." })).toBeVisible();
  const ended = await server.sql("SELECT end_reason FROM sessions WHERE id = $1 AND ended_at IS NOT NULL", [there]);
  expect(ended).toEqual([{ end_reason: "revoked" }]);
  await expect(other.getByTestId("sign-in-notice")).toHaveText(REVOKED_NOTICE, { timeout: 5_000 });

  // Ending this page's own session signs it out, with its own words.
  await page.getByTestId(`session-${here}`).getByRole("button", { name: "End this session" }).click();
  const own = page.getByRole("dialog", { name: "End this session?" });
  await expect(own).toContainText("ending it signs you out here");
  await own.getByRole("button", { name: "End this session" }).click();
  await expect(page.getByTestId("sign-in-notice")).toHaveText(ENDED_HERE);
  expect(await liveSessionIds(server, admin)).toEqual([]);
});

test("changing the password: violations beside the fields, the other sessions end, the new one signs in", async ({
  server,
  page,
}) => {
  const user = await server.addUser(Role.NANO_READ_ONLY);
  const otherToken = await server.tokenOf(user);
  await signIn(page, server, user);
  await openAccount(page);
  const current = page.getByLabel("Current password");
  const next = page.getByLabel("New password", { exact: true });
  const repeat = page.getByLabel("Repeat the new password");
  const submit = page.getByRole("button", { name: "Change password" });

  await current.fill("not the password at all");
  await next.fill(NEW_PASSWORD);
  await repeat.fill(NEW_PASSWORD);
  await submit.click();
  await expect(page.getByTestId("password-current-error")).toHaveText("This is not your current password.");
  await expect(current).toHaveAttribute("aria-invalid", "true");
  await expect(current).toBeFocused();
  await expectAccessible(page, "password form with errors");

  await current.fill(user.password);
  await next.fill("short");
  await repeat.fill("short");
  await submit.click();
  await expect(page.getByTestId("password-next-error")).toHaveText("Must be at least 8 characters.");
  await expect(page.getByTestId("password-current-error")).toHaveCount(0);

  await next.fill(NEW_PASSWORD);
  await repeat.fill(`${NEW_PASSWORD}!`);
  await submit.click();
  await expect(page.getByTestId("password-repeat-error")).toHaveText("The two new passwords differ.");
  expect(await outcome(server.api().auth.login({ email: user.email, password: user.password }))).toBe("OK");

  await repeat.fill(NEW_PASSWORD);
  await submit.click();
  await expect(page.getByTestId("password-changed")).toHaveText(PASSWORD_CHANGED);
  await expect(current).toHaveValue("");
  expect(await outcome(server.api(otherToken).auth.whoAmI({}))).toBe("Unauthenticated TOKEN_REVOKED");
  expect(await outcome(server.api().auth.login({ email: user.email, password: user.password }))).toBe(
    "Unauthenticated LOGIN_FAILED",
  );
  expect(await outcome(server.api().auth.login({ email: user.email, password: NEW_PASSWORD }))).toBe("OK");
  // This page's session goes on, and lists the new sign-in live.
  const [stillHere] = await liveSessionIds(server, user);
  await expect(page.getByTestId(`session-${stillHere}`)).toContainText("This session");
  await expect(page.getByTestId("sessions").locator("tbody tr")).toHaveCount(2);
});

test("a personal API token: created with a subset, shown once, works, listed, used, revoked", async ({
  server,
  page,
}) => {
  const user = await server.addUser(Role.NANO_USER);
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  await signIn(page, server, user);
  await openAccount(page);
  await expect(page.getByText("No personal API tokens.")).toBeVisible();

  await page.getByRole("button", { name: "Create token" }).click();
  const create = page.getByRole("dialog", { name: "Create a personal API token" });
  await expect(create).toContainText("None checked: the token may do everything your role (nanoUser) may.");
  await expectAccessible(page, "create token dialog");
  // A name is required: the service's violation shows beside the field.
  await create.getByRole("button", { name: "Create token" }).click();
  await expect(create.getByTestId("token-name-error")).toHaveText("Must be 1 to 100 characters.");
  await create.getByLabel("Name").fill("nightly export");
  await create.getByLabel("Expires after").selectOption({ label: "90 days" });
  await create.getByRole("checkbox", { name: /^users\.read\b/ }).check();
  await create.getByRole("button", { name: "Create token" }).click();

  const shown = page.getByRole("dialog", { name: "Your new token “nightly export”" });
  const value = (await shown.getByTestId("new-api-token").textContent()) ?? "";
  expect(value).toMatch(/^umt_/);
  await expect(shown).toContainText("it is shown only this once");
  await expectAccessible(page, "new token dialog");
  await shown.getByRole("button", { name: "Copy" }).click();
  await expect(page.getByRole("status").filter({ hasText: "The token was copied." })).toBeVisible();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(value);
  await shown.getByRole("button", { name: "Done" }).click();
  await expect(shown).toHaveCount(0);
  expect(await page.content()).not.toContain(value);

  // The token works within its subset, as ListApiTokens says.
  const listed = await server.api(await server.tokenOf(user)).apiTokens.listApiTokens({});
  expect(listed.apiTokens.map((t) => [t.name, t.permissions])).toEqual([["nightly export", ["users.read"]]]);
  const id = listed.apiTokens[0]?.id ?? "";
  const row = page.getByTestId(`api-token-${id}`);
  await expect(row.getByTestId("token-permissions")).toHaveText("users.read");
  await expect(row.getByTestId("token-last-used")).toHaveText("never");
  const byToken = server.api(value);
  expect(await outcome(byToken.users.listUsers({}))).toBe("OK");
  expect(await outcome(byToken.sessions.listSessions({}))).toBe("PermissionDenied PERMISSION_MISSING");
  // Its first use reaches the list through the change feed.
  await expect(row.getByTestId("token-last-used")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);

  // Revoking: cancel first, then for real.
  await row.getByRole("button", { name: "Revoke" }).click();
  const revoke = page.getByRole("dialog", { name: "Revoke the token “nightly export”?" });
  await expectAccessible(page, "revoke token dialog");
  await revoke.getByRole("button", { name: "Cancel" }).click();
  expect(await outcome(byToken.auth.whoAmI({}))).toBe("OK");
  await row.getByRole("button", { name: "Revoke" }).click();
  await revoke.getByRole("button", { name: "Revoke token" }).click();
  await expect(row).toHaveCount(0);
  await expect(page.getByText("No personal API tokens.")).toBeVisible();
  expect(await outcome(byToken.auth.whoAmI({}))).toBe("Unauthenticated API_TOKEN_INVALID");
  const stored = await server.sql("SELECT revoked_at IS NOT NULL AS revoked FROM api_tokens WHERE id = $1", [id]);
  expect(stored).toEqual([{ revoked: true }]);
});

test("tokens made and revoked elsewhere appear and disappear live; a whole-role token says so", async ({
  server,
  page,
}) => {
  const user = await server.addUser(Role.NANO_READ_ONLY);
  await signIn(page, server, user);
  await openAccount(page);
  const elsewhere = server.api(await server.tokenOf(user));
  const expiresAt = { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 };
  const made = await elsewhere.apiTokens.createApiToken({ name: "ci deploys", expiresAt });
  const row = page.getByTestId(`api-token-${made.apiToken?.id ?? ""}`);
  await expect(row.getByTestId("token-permissions")).toHaveText("Whole role");
  await expect(row).toContainText("ci deploys");
  await elsewhere.apiTokens.revokeApiToken({ apiTokenId: made.apiToken?.id ?? "" });
  await expect(row).toHaveCount(0);
});

test("keyboard only: create and revoke a token, change the password", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, user);
  await tabTo(page, "link", "My account");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "My account" })).toBeVisible();

  // Create: the dialog opens on its first field.
  await tabTo(page, "button", "Create token");
  await page.keyboard.press("Enter");
  const create = page.getByRole("dialog", { name: "Create a personal API token" });
  await expect(create.getByLabel("Name")).toBeFocused();
  await page.keyboard.type("keyboard token");
  await tabUntil(page, create.getByRole("checkbox", { name: /^users\.read\b/ }));
  await page.keyboard.press("Space");
  await expect(create.getByRole("checkbox", { name: /^users\.read\b/ })).toBeChecked();
  await tabUntil(page, create.getByRole("button", { name: "Create token" }));
  await page.keyboard.press("Enter");
  const shown = page.getByRole("dialog", { name: "Your new token “keyboard token”" });
  await expect(shown.getByRole("button", { name: "Copy" })).toBeFocused();
  const value = (await shown.getByTestId("new-api-token").textContent()) ?? "";
  await page.keyboard.press("Escape");
  await expect(shown).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Create token" })).toBeFocused();
  await expect(page.locator("body")).not.toContainText(value);
  const tokenRow = page.getByTestId("api-tokens").locator("tbody tr");
  await expect(tokenRow).toHaveCount(1);
  await expect(tokenRow.getByTestId("token-permissions")).toHaveText("users.read");

  // Revoke: Escape cancels, Enter on "Revoke token" revokes.
  await tabTo(page, "button", "Revoke the token keyboard token");
  await page.keyboard.press("Enter");
  const revoke = page.getByRole("dialog", { name: "Revoke the token “keyboard token”?" });
  await expect(revoke).toBeVisible();
  await page.keyboard.press("Escape");
  await expect(revoke).toHaveCount(0);
  expect(await outcome(server.api(value).auth.whoAmI({}))).toBe("OK");
  await page.keyboard.press("Enter");
  await expect(revoke).toBeVisible();
  await tabUntil(page, revoke.getByRole("button", { name: "Revoke token" }));
  await page.keyboard.press("Enter");
  await expect(tokenRow).toHaveCount(0);
  await expect(page.getByRole("heading", { name: "Personal API tokens" })).toBeFocused();
  expect(await outcome(server.api(value).auth.whoAmI({}))).toBe("Unauthenticated API_TOKEN_INVALID");

  // Change the password: Tab between the fields, Enter submits.
  await tabUntil(page, page.getByLabel("Current password"));
  await page.keyboard.type(user.password);
  await page.keyboard.press("Tab");
  await page.keyboard.type(NEW_PASSWORD);
  await tabUntil(page, page.getByLabel("Repeat the new password"));
  await page.keyboard.type(NEW_PASSWORD);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("password-changed")).toHaveText(PASSWORD_CHANGED);
  expect(await outcome(server.api().auth.login({ email: user.email, password: NEW_PASSWORD }))).toBe("OK");
});

test("at 360 px wide: no sideways scrolling, every action reachable", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  const elsewhere = server.api(await server.tokenOf(user));
  const expiresAt = { seconds: BigInt(Math.floor(Date.now() / 1000) + 86_400), nanos: 0 };
  await elsewhere.apiTokens.createApiToken({ name: "a token with a rather long name for a phone", expiresAt });
  await page.setViewportSize({ width: 360, height: 740 });
  await signIn(page, server, user);
  await openAccount(page);
  await expect(page.getByTestId("api-tokens").locator("tbody tr")).toHaveCount(1);
  // The invite's sign-in, the script's and this page's.
  await expect(page.getByTestId("sessions").locator("tbody tr")).toHaveCount(3);
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);

  for (const name of ["End session", "End this session", "Revoke", "Create token", "Change password"]) {
    const button = page.getByRole("button", { name }).first();
    await button.scrollIntoViewIfNeeded();
    await expect(button).toBeInViewport();
  }
  await page.getByRole("button", { name: "Create token" }).click();
  const create = page.getByRole("dialog", { name: "Create a personal API token" });
  const box = await create.boundingBox();
  expect(box !== null && box.x >= 0 && box.x + box.width <= 360).toBe(true);
  await create.getByRole("button", { name: "Create token" }).scrollIntoViewIfNeeded();
  await expect(create.getByRole("button", { name: "Create token" })).toBeInViewport();
  await expectAccessible(page, "create token dialog at 360 px");
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
});
