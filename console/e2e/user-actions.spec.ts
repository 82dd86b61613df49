// An expanded user's actions (issue 27, "A user expanded"): Edit role with
// each role's permissions and a confirmation step, Delete / Renew token /
// Suspend double-confirmed with the service's own warning, Reactivate, a
// stale etag answered by reading the user again, the last admin kept, and
// nothing offered that the caller's role does not hold.
import type { Locator, Page } from "@playwright/test";
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { failureOf } from "../src/errors";
import { RoleService, type ListRolesResponse } from "../src/gen/usermgmt/v1/role_service_pb";
import { expect, Role, signIn, test, type Person, type Server } from "./fixtures";
import { expectAccessible, tabTo } from "./a11y";

const STALE = "Someone changed this user meanwhile; here is the current state — choose again.";

interface UserRow {
  role: string;
  state: string;
  token_key: string;
}

async function userRow(server: Server, userId: string): Promise<UserRow | undefined> {
  const rows = await server.sql<UserRow>("SELECT role, state, token_key::text AS token_key FROM users WHERE id = $1", [
    userId,
  ]);
  return rows[0];
}

async function pendingInvitesOf(server: Server, userId: string): Promise<number> {
  const rows = await server.sql<{ n: number }>(
    "SELECT count(*)::int AS n FROM invites WHERE created_by_user_id = $1 AND revoked_at IS NULL AND accepted_at IS NULL",
    [userId],
  );
  return rows[0]?.n ?? -1;
}

/** A nanoAdmin who has invited `count` people (invites still pending). */
async function adminWithInvites(server: Server, count: number): Promise<Person> {
  const person = await server.addUser(Role.NANO_ADMIN);
  const users = server.api(await server.tokenOf(person)).users;
  for (let i = 0; i < count; i++) await users.createInvite({ email: `invitee-${i}@example.com`, role: Role.NANO_USER });
  return person;
}

async function listRoles(server: Server, accessToken: string): Promise<ListRolesResponse> {
  const withToken: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${accessToken}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({ baseUrl: server.url, interceptors: [withToken] });
  return await createClient(RoleService, transport).listRoles({});
}

/** Opens the Users page and expands `email`'s row; the locator of its actions. */
async function expandUser(page: Page, email: string): Promise<Locator> {
  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: "Users" }).click();
  const row = page.getByRole("button", { name: email, exact: true });
  await row.click();
  await expect(row).toHaveAttribute("aria-expanded", "true");
  return page.getByRole("group", { name: `Actions for ${email}` });
}

function notice(page: Page, text: string): Locator {
  return page.getByRole("status").getByText(text, { exact: true });
}

test("an admin changes a role in the dialog: each role expands to exactly its permissions, the confirmation says what happens", async ({ server, page }) => {
  const user = await adminWithInvites(server, 1);
  const matrix = await listRoles(server, await server.tokenOf(server.admin));
  let listRolesCalls = 0;
  page.on("request", (request) => {
    if (request.url().endsWith("/usermgmt.v1.RoleService/ListRoles")) listRolesCalls++;
  });
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, user.email);
  await actions.getByRole("button", { name: "Edit role", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: `Edit the role of ${user.email}` });
  await expect(dialog.getByRole("radio", { name: "nanoAdmin (current)" })).toBeChecked();
  await expect(dialog.getByRole("radio", { name: "nanoAdmin (current)" })).toBeFocused();

  for (const definition of matrix.roles) {
    const name = definition.displayName;
    const disclosure = dialog.getByRole("button", { name: new RegExp(`^Permissions of ${name}`) });
    const list = dialog.getByRole("list", { name: `Permissions of ${name}` });
    await expect(disclosure).toHaveAttribute("aria-expanded", "false");
    await expect(list).toBeHidden();
    await disclosure.click();
    await expect(disclosure).toHaveAttribute("aria-expanded", "true");
    await expect(list.locator("code")).toHaveText(definition.permissions);
    await expect(dialog.locator(`#role-option-${name}-description`)).toHaveText(definition.description);
  }
  await expectAccessible(page, "role dialog, every role expanded");
  await dialog.getByRole("button", { name: /^Permissions of nanoAdmin/ }).click();
  await expect(dialog.getByRole("list", { name: "Permissions of nanoAdmin" })).toBeHidden();

  await dialog.getByRole("radio", { name: "nanoReadOnly" }).check();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await expect(dialog.getByTestId("role-consequences").locator("p")).toHaveText([
    `${user.email} becomes nanoReadOnly.`,
    "Every token and session of this user stops working now.",
    "Pending invites they created are revoked: nanoReadOnly cannot invite.",
    "Playback tokens they issued stay valid until they expire.",
  ]);
  await expect(dialog.getByTestId("role-consequences")).toBeFocused();
  await expectAccessible(page, "role dialog, confirmation step");
  expect(await userRow(server, user.userId)).toMatchObject({ role: "nanoAdmin" });

  await dialog.getByRole("button", { name: "Change role" }).click();
  await expect(
    notice(
      page,
      `${user.email} is now nanoReadOnly: their tokens and sessions stopped working; 1 pending invite they created was revoked.`,
    ),
  ).toBeVisible();
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toMatchObject({ role: "nanoReadOnly" });
  expect(await pendingInvitesOf(server, user.userId)).toBe(0);

  // The roles were read once: opening the dialog again asks nothing more.
  await actions.getByRole("button", { name: "Edit role", exact: true }).click();
  await expect(dialog.getByRole("radio", { name: "nanoReadOnly (current)" })).toBeChecked();
  expect(listRolesCalls).toBe(1);
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
});

test("delete needs both confirmations: cancelling at either step changes nothing", async ({ server, page }) => {
  const user = await adminWithInvites(server, 2);
  const before = await userRow(server, user.userId);
  const e = user.email;
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, e);
  const dialog = page.getByRole("dialog", { name: `Delete ${e}` });

  await actions.getByRole("button", { name: "Delete", exact: true }).click();
  await expect(dialog.locator("#double-confirm-text")).toHaveText(
    `Delete ${e}? The service first says what deleting changes; nothing happens until you confirm a second time.`,
  );
  await expectAccessible(page, "delete, first step");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toEqual(before);

  await actions.getByRole("button", { name: "Delete", exact: true }).click();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await expect(dialog.getByRole("alert").locator("p")).toHaveText(
    `Deleting ${e} cannot be undone: all of ${e}'s access tokens stop working at once and ${e} can no longer log in. ` +
      `Its 2 pending invites are revoked with it. Playback tokens ${e} issued stay valid until they expire.`,
  );
  await expect(dialog.getByRole("listitem")).toHaveText([
    "2 pending invites they created are revoked",
    /^Confirm before \d\d:\d\d:\d\d UTC; after that, start again$/,
  ]);
  await expectAccessible(page, "delete, second step");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toEqual(before);
  expect(await pendingInvitesOf(server, user.userId)).toBe(2);

  await actions.getByRole("button", { name: "Delete", exact: true }).click();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await dialog.getByRole("button", { name: "Delete user" }).click();
  await expect(notice(page, `${e} was deleted.`)).toBeVisible();
  await expect(dialog).toBeHidden();
  await expect(page.getByRole("button", { name: e, exact: true })).toBeHidden();
  expect(await userRow(server, user.userId)).toBeUndefined();
  expect(await pendingInvitesOf(server, user.userId)).toBe(0);
});

test("renew token needs both confirmations; the fingerprint changes only after the second", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  const oldToken = await server.tokenOf(user);
  const before = await userRow(server, user.userId);
  const e = user.email;
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, e);
  const dialog = page.getByRole("dialog", { name: `Renew the token of ${e}` });

  await actions.getByRole("button", { name: "Renew token", exact: true }).click();
  await expect(dialog.locator("#double-confirm-text")).toHaveText(
    `Renew the tokenKey of ${e}? The service first says what renewing changes; nothing happens until you confirm a second time.`,
  );
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toEqual(before);

  await actions.getByRole("button", { name: "Renew token", exact: true }).click();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await expect(dialog.getByRole("alert").locator("p")).toHaveText(
    `Renewing the tokenKey of ${e} makes all of ${e}'s access tokens stop working at once; ${e} must log in again. ` +
      `Playback tokens ${e} issued stay valid until they expire.`,
  );
  await expect(dialog.getByRole("listitem")).toHaveText([/^Confirm before \d\d:\d\d:\d\d UTC; after that, start again$/]);
  await expectAccessible(page, "renew token, second step");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toEqual(before);
  await server.api(oldToken).auth.whoAmI({});

  await actions.getByRole("button", { name: "Renew token", exact: true }).click();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await dialog.getByRole("button", { name: "Renew token" }).click();
  await expect(dialog).toBeHidden();
  const after = await userRow(server, user.userId);
  expect(after?.token_key).not.toBe(before?.token_key);
  const adminApi = server.api(await server.tokenOf(server.admin));
  const renewed = (await adminApi.users.getUser({ userId: user.userId })).user;
  await expect(
    notice(page, `The tokenKey of ${e} was renewed; its fingerprint is now ${renewed?.tokenKeyFingerprint}.`),
  ).toBeVisible();
  const refused = await server.api(oldToken).auth.whoAmI({}).then(() => undefined, failureOf);
  expect(refused).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_REVOKED" });
});

test("suspend is double-confirmed; reactivate takes one confirmation", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  const e = user.email;
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, e);
  const suspend = page.getByRole("dialog", { name: `Suspend ${e}` });

  await actions.getByRole("button", { name: "Suspend", exact: true }).click();
  await expectAccessible(page, "suspend, first step");
  await suspend.getByRole("button", { name: "Continue" }).click();
  await expect(suspend.getByRole("alert").locator("p")).toHaveText(
    `Suspending ${e} makes all of ${e}'s sessions, access tokens and API tokens stop working at once and ${e} can no longer ` +
      `log in until reactivated; reactivating does not bring the old credentials back. ${e} keeps their role and history. ` +
      `Playback tokens ${e} issued stay valid until they expire.`,
  );
  await suspend.getByRole("button", { name: "Cancel" }).click();
  expect(await userRow(server, user.userId)).toMatchObject({ state: "active" });

  await actions.getByRole("button", { name: "Suspend", exact: true }).click();
  await suspend.getByRole("button", { name: "Continue" }).click();
  await suspend.getByRole("button", { name: "Suspend user" }).click();
  await expect(notice(page, `${e} is suspended: their sessions and tokens stopped working.`)).toBeVisible();
  expect(await userRow(server, user.userId)).toMatchObject({ state: "suspended" });

  const reactivate = page.getByRole("dialog", { name: `Reactivate ${e}` });
  await actions.getByRole("button", { name: "Reactivate", exact: true }).click();
  await expect(reactivate.locator("#reactivate-text")).toHaveText(
    `${e} can sign in again, with new credentials: the sessions and tokens from before the suspension stay invalid. ` +
      "Reactivating takes nothing away, so one confirmation is enough.",
  );
  await expectAccessible(page, "reactivate");
  await reactivate.getByRole("button", { name: "Reactivate" }).click();
  await expect(notice(page, `${e} is active again and can sign in.`)).toBeVisible();
  expect(await userRow(server, user.userId)).toMatchObject({ state: "active" });
  await expect(actions.getByRole("button", { name: "Suspend", exact: true })).toBeVisible();
});

test("a stale etag: the page reads the user again instead of overwriting someone else's change", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, user.email);
  await actions.getByRole("button", { name: "Edit role", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: `Edit the role of ${user.email}` });
  await expect(dialog.getByRole("radio", { name: "nanoUser (current)" })).toBeChecked();

  // Someone else changes the user after the page read it.
  const adminApi = server.api(await server.tokenOf(server.admin));
  await adminApi.users.updateUserRole({ userId: user.userId, role: Role.NANO_READ_ONLY });

  await dialog.getByRole("radio", { name: "nanoAdmin" }).check();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await dialog.getByRole("button", { name: "Change role" }).click();
  await expect(dialog.getByRole("alert")).toHaveText(STALE);
  await expect(dialog.getByRole("radio", { name: "nanoReadOnly (current)" })).toBeChecked();
  await expect(dialog.locator("#role-dialog-text")).toHaveText(
    `${user.email} is nanoReadOnly. Choose the new role; each role shows what it may do.`,
  );
  await expectAccessible(page, "role dialog after a stale etag");
  expect(await userRow(server, user.userId)).toMatchObject({ role: "nanoReadOnly" });

  // Choosing again, from the current state, works.
  await dialog.getByRole("radio", { name: "nanoAdmin" }).check();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await dialog.getByRole("button", { name: "Change role" }).click();
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toMatchObject({ role: "nanoAdmin" });
});

test("the last admin can be neither demoted, suspended nor deleted: the page shows the service's reason", async ({ server, page }) => {
  const reason = `${server.admin.email} is the organisation's last active nanoAdmin: make another user nanoAdmin first`;
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, server.admin.email);

  await actions.getByRole("button", { name: "Edit role", exact: true }).click();
  const roleDialog = page.getByRole("dialog", { name: `Edit the role of ${server.admin.email}` });
  await roleDialog.getByRole("radio", { name: "nanoUser" }).check();
  await roleDialog.getByRole("button", { name: "Continue" }).click();
  await expect(roleDialog.getByTestId("role-consequences").locator("p").last()).toHaveText(
    "This is you: you will be signed out.",
  );
  await roleDialog.getByRole("button", { name: "Change role" }).click();
  await expect(roleDialog.getByRole("alert")).toHaveText(reason);
  await expectAccessible(page, "role dialog with the service's refusal");
  await roleDialog.getByRole("button", { name: "Back" }).click();
  await roleDialog.getByRole("button", { name: "Cancel" }).click();

  for (const [button, title] of [
    ["Delete", `Delete ${server.admin.email}`],
    ["Suspend", `Suspend ${server.admin.email}`],
  ] as const) {
    await actions.getByRole("button", { name: button, exact: true }).click();
    const dialog = page.getByRole("dialog", { name: title });
    await dialog.getByRole("button", { name: "Continue" }).click();
    await expect(dialog.getByRole("alert")).toHaveText(reason);
    await dialog.getByRole("button", { name: "Cancel" }).click();
  }
  expect(await userRow(server, server.admin.userId)).toMatchObject({ role: "nanoAdmin", state: "active" });
});

test("a nanoUser sees the users without any action; a nanoReadOnly has no Users page", async ({ server, page }) => {
  const member = await server.addUser(Role.NANO_USER);
  const readOnly = await server.addUser(Role.NANO_READ_ONLY);
  await signIn(page, server, member);
  await expandUser(page, server.admin.email);
  await expect(page.getByText("Your role may see this user but not change it.")).toBeVisible();
  await expect(page.getByRole("group", { name: /^Actions for/ })).toHaveCount(0);
  for (const name of ["Edit role", "Renew token", "Suspend", "Reactivate", "Delete"]) {
    await expect(page.getByRole("button", { name, exact: true })).toHaveCount(0);
  }
  await expectAccessible(page, "users, expanded, as nanoUser");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByTestId("sign-in-notice")).toHaveText("You signed out.");

  await signIn(page, server, readOnly);
  const sections = page.getByRole("navigation", { name: "Sections" });
  await expect(sections.getByRole("link")).toHaveText(["Organisation", "My account"]);
  await page.goto(`${server.url}/#/users`);
  await expect(page.getByRole("heading", { level: 1, name: "Acme Streaming" })).toBeVisible();
  await expect(page.getByRole("group", { name: /^Actions for/ })).toHaveCount(0);
});

test("with the keyboard only: edit a role, then delete the user", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  await page.goto(server.url);
  await tabTo(page, "textbox", "Email");
  await page.keyboard.type(server.admin.email);
  await page.keyboard.press("Tab");
  await page.keyboard.type(server.admin.password);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("me-role")).toHaveText("nanoAdmin");
  await tabTo(page, "link", "Users");
  await page.keyboard.press("Enter");
  await tabTo(page, "button", user.email);
  await page.keyboard.press("Enter");
  await tabTo(page, "button", /^Edit role$/);
  await page.keyboard.press("Enter");

  const dialog = page.getByRole("dialog", { name: `Edit the role of ${user.email}` });
  await expect(dialog.getByRole("radio", { name: "nanoUser (current)" })).toBeFocused();
  await page.keyboard.press("ArrowDown");
  await expect(dialog.getByRole("radio", { name: "nanoReadOnly" })).toBeChecked();
  await tabTo(page, "button", /^Permissions of nanoReadOnly/);
  await page.keyboard.press("Space");
  await expect(dialog.getByRole("button", { name: /^Permissions of nanoReadOnly/ })).toHaveAttribute(
    "aria-expanded",
    "true",
  );
  await tabTo(page, "button", /^Continue$/);
  await page.keyboard.press("Enter");
  await expect(dialog.getByTestId("role-consequences")).toBeFocused();
  await tabTo(page, "button", /^Change role$/);
  await page.keyboard.press("Enter");
  await expect(dialog).toBeHidden();
  expect(await userRow(server, user.userId)).toMatchObject({ role: "nanoReadOnly" });

  const remove = page.getByRole("dialog", { name: `Delete ${user.email}` });
  await tabTo(page, "button", /^Delete$/);
  await page.keyboard.press("Enter");
  await expect(remove).toBeVisible();
  await page.keyboard.press("Escape");
  await expect(remove).toBeHidden();
  expect(await userRow(server, user.userId)).toMatchObject({ role: "nanoReadOnly" });
  await expect(page.getByRole("button", { name: "Delete", exact: true })).toBeFocused();
  await page.keyboard.press("Enter");
  await tabTo(page, "button", /^Continue$/);
  await page.keyboard.press("Enter");
  await tabTo(page, "button", /^Delete user$/);
  await page.keyboard.press("Enter");
  await expect(remove).toBeHidden();
  expect(await userRow(server, user.userId)).toBeUndefined();
});

test("at 360 px the dialogs fit and their actions are reachable", async ({ server, page }) => {
  const user = await adminWithInvites(server, 1);
  await page.setViewportSize({ width: 360, height: 740 });
  await signIn(page, server, server.admin);
  const actions = await expandUser(page, user.email);
  const pageWidth = () => page.evaluate(() => document.documentElement.scrollWidth);

  await actions.getByRole("button", { name: "Edit role", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: `Edit the role of ${user.email}` });
  await dialog.getByRole("button", { name: /^Permissions of nanoAdmin/ }).click();
  await expect(dialog.getByRole("list", { name: "Permissions of nanoAdmin" })).toBeVisible();
  expect(await pageWidth()).toBeLessThanOrEqual(360);
  const proceed = dialog.getByRole("button", { name: "Continue" });
  await proceed.scrollIntoViewIfNeeded();
  await expect(proceed).toBeInViewport();
  await expectAccessible(page, "role dialog at 360 px");
  await dialog.getByRole("radio", { name: "nanoUser" }).check();
  await proceed.click();
  await expect(dialog.getByRole("button", { name: "Change role" })).toBeInViewport();
  expect(await pageWidth()).toBeLessThanOrEqual(360);
  await page.keyboard.press("Escape");

  await actions.getByRole("button", { name: "Delete", exact: true }).click();
  const remove = page.getByRole("dialog", { name: `Delete ${user.email}` });
  await remove.getByRole("button", { name: "Continue" }).click();
  await expect(remove.getByRole("button", { name: "Delete user" })).toBeInViewport();
  expect(await pageWidth()).toBeLessThanOrEqual(360);
  await expectAccessible(page, "delete, second step, at 360 px");
});
