// The Invites view and the page an invite link opens, against a real
// server: the link shown once, accepting it in another browser, revoking,
// the pending list following the change feed, the keyboard and 360 px.
import type { Page } from "@playwright/test";
import { expect, Role, signIn, test, type Server } from "./fixtures";
import { expectAccessible, tabTo } from "./a11y";

const NEW_PASSWORD = "a new member's passphrase";
const INVITE_INVALID =
  "This invite link no longer works: it was already used, revoked, or it expired. Ask the person who invited you for a new invite.";

async function openInvites(page: Page, server: Server): Promise<void> {
  await signIn(page, server, server.admin);
  await page.getByRole("link", { name: "Invites" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Invites" })).toBeVisible();
}

/** An invite made through the API, as another admin's page would; returns its link. */
async function inviteThroughApi(server: Server, email: string, role = Role.NANO_USER): Promise<{ id: string; link: string }> {
  const api = server.api(await server.tokenOf(server.admin));
  const created = await api.users.createInvite({ email, role });
  return { id: created.invite?.id ?? "", link: `${server.url}/accept-invite#token=${created.inviteToken}` };
}

function rowOf(page: Page, email: string) {
  return page.getByTestId("invite-row").filter({ hasText: email });
}

async function inviteState(server: Server, email: string) {
  const rows = await server.sql<{ role: string; accepted: boolean; revoked: boolean; days: number }>(
    `SELECT role, accepted_at IS NOT NULL AS accepted, revoked_at IS NOT NULL AS revoked,
            round(extract(epoch FROM expires_at - created_at) / 86400)::int AS days
       FROM invites WHERE email = $1`,
    [email],
  );
  return rows;
}

async function fillNewPassword(page: Page, first: string, second: string): Promise<void> {
  await page.getByLabel("New password", { exact: true }).fill(first);
  await page.getByLabel("Repeat the password", { exact: true }).fill(second);
}

test("an invite's link, shown once, lets the invitee join with its role; the admin's list loses it live", async ({ server, page, newPage }) => {
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  await openInvites(page, server);
  await expect(page.getByTestId("invites-empty")).toHaveText(
    "No pending invites. Invites you create show here until they are accepted, revoked or expire.",
  );
  await expectAccessible(page, "invites, none pending");

  await page.getByLabel("Email").fill("new.member@example.com");
  await page.getByRole("radio", { name: /nanoReadOnly/ }).check();
  await page.getByLabel("Valid for").selectOption("30");
  await page.getByRole("button", { name: "Create invite" }).click();

  const dialog = page.getByRole("dialog", { name: "Invite created" });
  await expect(dialog).toBeVisible();
  await expect(dialog.getByText("This link is shown only now: copy it before you close this window.")).toBeVisible();
  await expectAccessible(page, "invite link dialog");
  const link = await dialog.getByLabel("Invite link").inputValue();
  expect(link).toMatch(new RegExp(`^${server.url}/accept-invite#token=\\S+$`));
  await dialog.getByRole("button", { name: "Copy link" }).click();
  await expect(dialog.getByRole("status")).toHaveText("The link is copied.");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(link);
  await dialog.getByRole("button", { name: "Done" }).click();
  await expect(dialog).toBeHidden();

  const row = rowOf(page, "new.member@example.com");
  await expect(row.getByRole("cell")).toHaveText([
    "new.member@example.com",
    "nanoReadOnly",
    /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/,
    /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/,
    "admin@example.com (you)",
    "Revoke",
  ]);
  expect(await inviteState(server, "new.member@example.com")).toEqual([
    { role: "nanoReadOnly", accepted: false, revoked: false, days: 30 },
  ]);
  await expectAccessible(page, "invites, one pending");

  const invitee = await newPage();
  await invitee.goto(link);
  await expect(invitee.getByRole("heading", { level: 1, name: "Join your organisation" })).toBeVisible();
  // The token left the address bar as soon as the page read it.
  await expect(invitee).toHaveURL(`${server.url}/accept-invite`);
  await expectAccessible(invitee, "accept invite");
  await fillNewPassword(invitee, NEW_PASSWORD, NEW_PASSWORD);
  await invitee.getByRole("button", { name: "Set password and join" }).click();

  await expect(invitee.getByTestId("me-email")).toHaveText("new.member@example.com");
  await expect(invitee.getByTestId("me-role")).toHaveText("nanoReadOnly");
  await expect(invitee.getByRole("heading", { level: 1, name: "Acme Streaming" })).toBeVisible();
  await expect(invitee).toHaveURL(`${server.url}/#/overview`);
  expect(await server.sql("SELECT role FROM users WHERE email = $1", ["new.member@example.com"])).toEqual([
    { role: "nanoReadOnly" },
  ]);
  expect(await inviteState(server, "new.member@example.com")).toEqual([
    { role: "nanoReadOnly", accepted: true, revoked: false, days: 30 },
  ]);

  // The admin's page follows the feed: the accepted invite leaves it within a second.
  await expect(page.getByTestId("invite-row")).toHaveCount(0, { timeout: 1_000 });
  await expect(page.getByTestId("invites-empty")).toBeVisible();
});

test("a revoked invite leaves the list and its link then fails with a clear sentence", async ({ server, page, newPage }) => {
  await openInvites(page, server);
  await expect(page.getByTestId("invites-empty")).toBeVisible();
  // Invites made elsewhere join the open list within a second.
  const first = await inviteThroughApi(server, "first@example.com");
  const second = await inviteThroughApi(server, "second@example.com");
  await expect(page.getByTestId("invite-row")).toHaveCount(2, { timeout: 1_000 });

  await rowOf(page, "first@example.com").getByRole("button", { name: "Revoke the invite for first@example.com" }).click();
  const dialog = page.getByRole("dialog", { name: "Revoke the invite?" });
  await expect(dialog).toContainText("The invite for first@example.com (nanoUser) stops working at once");
  await expectAccessible(page, "revoke invite dialog");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(dialog).toBeHidden();
  expect(await inviteState(server, "first@example.com")).toEqual([
    { role: "nanoUser", accepted: false, revoked: false, days: 7 },
  ]);

  await rowOf(page, "first@example.com").getByRole("button", { name: "Revoke" }).click();
  await dialog.getByRole("button", { name: "Revoke invite" }).click();
  await expect(dialog).toBeHidden();
  await expect(rowOf(page, "first@example.com")).toHaveCount(0);
  await expect(page.getByRole("status").getByText("The invite for first@example.com was revoked.")).toBeVisible();
  expect(await inviteState(server, "first@example.com")).toEqual([
    { role: "nanoUser", accepted: false, revoked: true, days: 7 },
  ]);

  // Revoked elsewhere: gone from the open list within a second.
  const adminApi = server.api(await server.tokenOf(server.admin));
  await adminApi.users.revokeInvite({ inviteId: second.id });
  await expect(page.getByTestId("invite-row")).toHaveCount(0, { timeout: 1_000 });

  const invitee = await newPage();
  await invitee.goto(first.link);
  await fillNewPassword(invitee, NEW_PASSWORD, NEW_PASSWORD);
  await invitee.getByRole("button", { name: "Set password and join" }).click();
  await expect(invitee.getByTestId("link-invalid")).toHaveText(INVITE_INVALID);
  await expect(invitee.getByRole("link", { name: "Go to the sign-in page" })).toHaveAttribute("href", "/");
  await expectAccessible(invitee, "accept invite, link invalid");
  expect(await server.sql("SELECT id FROM users WHERE email = $1", ["first@example.com"])).toEqual([]);
});

test("accepting checks the two passwords here and shows the server's objection", async ({ server, newPage }) => {
  const { link } = await inviteThroughApi(server, "careful@example.com");
  const invitee = await newPage();
  const sent: string[] = [];
  invitee.on("request", (request) => {
    if (request.url().endsWith("/usermgmt.v1.AuthService/AcceptInvite")) sent.push(request.url());
  });
  await invitee.goto(link);

  await fillNewPassword(invitee, NEW_PASSWORD, `${NEW_PASSWORD}!`);
  await invitee.getByRole("button", { name: "Set password and join" }).click();
  await expect(invitee.getByRole("alert")).toHaveText("The two passwords differ: type the same password twice.");
  await expect(invitee.getByLabel("Repeat the password", { exact: true })).toBeFocused();
  await expectAccessible(invitee, "accept invite, passwords differ");
  expect(sent).toEqual([]);

  await fillNewPassword(invitee, "short", "short");
  await invitee.getByRole("button", { name: "Set password and join" }).click();
  await expect(invitee.getByRole("alert")).toHaveText("The password must be at least 8 characters.");
  await expect(invitee.getByLabel("New password", { exact: true })).toBeFocused();
  expect(sent).toHaveLength(1);
  expect(await inviteState(server, "careful@example.com")).toEqual([
    { role: "nanoUser", accepted: false, revoked: false, days: 7 },
  ]);
  expect(await server.sql("SELECT id FROM users WHERE email = $1", ["careful@example.com"])).toEqual([]);
});

test("creating an invite, accepting it and revoking one with the keyboard only", async ({ server, page, newPage }) => {
  await signIn(page, server, server.admin);
  await tabTo(page, "link", "Invites");
  await page.keyboard.press("Enter");
  await tabTo(page, "textbox", "Email");
  await page.keyboard.type("keys@example.com");
  await page.keyboard.press("Tab");
  await expect(page.getByRole("radio", { name: /nanoUser/ })).toBeFocused();
  await page.keyboard.press("ArrowDown");
  await expect(page.getByRole("radio", { name: /nanoReadOnly/ })).toBeChecked();
  await page.keyboard.press("Tab");
  await expect(page.getByLabel("Valid for")).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("button", { name: "Create invite" })).toBeFocused();
  await page.keyboard.press("Enter");

  const dialog = page.getByRole("dialog", { name: "Invite created" });
  const linkField = dialog.getByLabel("Invite link");
  await expect(linkField).toBeFocused();
  const link = await linkField.inputValue();
  await tabTo(page, "button", "Done");
  await page.keyboard.press("Enter");
  await expect(dialog).toBeHidden();
  // The next invite starts where the last one did.
  await expect(page.getByLabel("Email")).toBeFocused();
  await expect(rowOf(page, "keys@example.com")).toContainText("nanoReadOnly");

  const invitee = await newPage();
  await invitee.goto(link);
  await tabTo(invitee, "textbox", "New password");
  await invitee.keyboard.type(NEW_PASSWORD);
  await invitee.keyboard.press("Tab");
  await invitee.keyboard.type(NEW_PASSWORD);
  await invitee.keyboard.press("Enter");
  await expect(invitee.getByTestId("me-role")).toHaveText("nanoReadOnly");
  await expect(page.getByTestId("invite-row")).toHaveCount(0, { timeout: 1_000 });

  await inviteThroughApi(server, "revoke.me@example.com");
  const revoke = page.getByRole("button", { name: "Revoke the invite for revoke.me@example.com" });
  await expect(revoke).toBeVisible();
  await tabTo(page, "button", "Revoke the invite for revoke.me@example.com");
  await page.keyboard.press("Enter");
  const confirm = page.getByRole("dialog", { name: "Revoke the invite?" });
  await expect(confirm).toBeVisible();
  await page.keyboard.press("Escape");
  await expect(confirm).toBeHidden();
  await expect(revoke).toBeFocused();
  expect(await inviteState(server, "revoke.me@example.com")).toEqual([
    { role: "nanoUser", accepted: false, revoked: false, days: 7 },
  ]);
  await page.keyboard.press("Enter");
  await expect(confirm.getByRole("button", { name: "Cancel" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(confirm.getByRole("button", { name: "Revoke invite" })).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(confirm).toBeHidden();
  await expect(page.getByRole("heading", { name: /^Pending invites/ })).toBeFocused();
  expect(await inviteState(server, "revoke.me@example.com")).toEqual([
    { role: "nanoUser", accepted: false, revoked: true, days: 7 },
  ]);
});

test("the pending list comes a page at a time", async ({ server, page }) => {
  const api = server.api(await server.tokenOf(server.admin));
  for (let i = 1; i <= 51; i++) {
    await api.users.createInvite({ email: `paged-${String(i).padStart(2, "0")}@example.com`, role: Role.NANO_USER });
  }
  await openInvites(page, server);
  await expect(page.getByTestId("invite-row")).toHaveCount(50);
  await expect(page.getByText("Showing the oldest 50 pending invites.")).toBeVisible();
  await page.getByRole("button", { name: "Show more invites" }).click();
  await expect(page.getByTestId("invite-row")).toHaveCount(51);
  await expect(page.getByTestId("invite-row").last()).toContainText("paged-51@example.com");
  await expect(page.getByRole("button", { name: "Show more invites" })).toHaveCount(0);
  await expect(page.getByRole("heading", { name: "Pending invites (51)" })).toBeVisible();
});

test("an invite for a member's email or a malformed one is refused beside the field", async ({ server, page }) => {
  await openInvites(page, server);
  await page.getByLabel("Email").fill(server.admin.email);
  await page.getByRole("button", { name: "Create invite" }).click();
  await expect(page.locator("#invite-email-error")).toHaveText("A user with this email exists in the organisation.");
  await expect(page.getByLabel("Email")).toBeFocused();
  await expectAccessible(page, "invites, refused email");
  expect(await server.sql("SELECT id FROM invites")).toEqual([]);
});

test("members without users.invite are not offered Invites", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, user);
  const nav = page.getByRole("navigation", { name: "Sections" });
  await expect(nav.getByRole("link", { name: "Users" })).toBeVisible();
  await expect(nav.getByRole("link", { name: "Invites" })).toHaveCount(0);
  // Only the fragment changes: the same document, still signed in.
  await page.goto(`${server.url}/#/invites`);
  await expect(page.getByRole("heading", { level: 1, name: "Acme Streaming" })).toBeVisible();
  await expect(page.getByRole("heading", { level: 1, name: "Invites" })).toHaveCount(0);
});

test("at 360 px the form, the list, the link and the accept page fit", async ({ server, page, newPage }) => {
  await page.setViewportSize({ width: 360, height: 740 });
  await openInvites(page, server);
  await inviteThroughApi(server, "a.rather.long.address.for.a.narrow.screen@example.com");
  await expect(page.getByTestId("invite-row")).toHaveCount(1);
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  await page.getByLabel("Email").fill("narrow@example.com");
  await page.getByRole("button", { name: "Create invite" }).click();
  const dialog = page.getByRole("dialog", { name: "Invite created" });
  await expect(dialog).toBeVisible();
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  const link = await dialog.getByLabel("Invite link").inputValue();
  await dialog.getByRole("button", { name: "Done" }).click();
  await rowOf(page, "narrow@example.com").getByRole("button", { name: "Revoke" }).click();
  await page.getByRole("dialog", { name: "Revoke the invite?" }).getByRole("button", { name: "Revoke invite" }).click();
  await expect(rowOf(page, "narrow@example.com")).toHaveCount(0);

  const other = await inviteThroughApi(server, "narrow.two@example.com");
  const invitee = await newPage();
  await invitee.setViewportSize({ width: 360, height: 740 });
  await invitee.goto(other.link);
  await expect(invitee.getByRole("button", { name: "Set password and join" })).toBeInViewport();
  expect(await invitee.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  await invitee.goto(link);
  await fillNewPassword(invitee, NEW_PASSWORD, NEW_PASSWORD);
  await invitee.getByRole("button", { name: "Set password and join" }).click();
  await expect(invitee.getByTestId("link-invalid")).toHaveText(INVITE_INVALID);
});
