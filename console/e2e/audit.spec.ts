// The audit log view: what it shows agrees with ListAuditEvents, every
// filter the RPC offers works from the form, paging, live updates, the
// empty state, the keyboard and a 360 px screen; a member without
// audit.read is not offered the view and the server refuses the call.
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { Page } from "@playwright/test";
import { failureOf } from "../src/errors";
import type { AuditEvent, ListAuditEventsRequest } from "../src/gen/usermgmt/v1/audit_service_pb";
import { expect, Role, signIn, test, type Api, type Person, type Server } from "./fixtures";
import { expectAccessible, tabTo } from "./a11y";

type Filters = Partial<Omit<ListAuditEventsRequest, "$typeName" | "$unknown">>;

function rows(page: Page) {
  return page.getByTestId("audit-row");
}

/** The time cell's text of `event`, to the second, in UTC. */
function timeText(event: AuditEvent): string {
  return `${timestampDate(event.occurredAt!).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

async function adminApi(server: Server): Promise<Api> {
  return server.api(await server.tokenOf(server.admin));
}

/** The first page the view asks for, as the service answers it. */
async function firstPage(api: Api, filters: Filters = {}): Promise<AuditEvent[]> {
  return (await api.audit.listAuditEvents({ pageSize: 25, ...filters })).events;
}

/** The rows on the page show exactly `events`, in order (by action and change #). */
async function expectRowsOf(page: Page, events: AuditEvent[]): Promise<void> {
  await expect(rows(page)).toHaveCount(events.length);
  await expect(rows(page).locator("td.audit-sequence")).toHaveText(
    events.map((e) => (e.sequence > 0n ? e.sequence.toString() : "—")),
  );
  await expect(rows(page).locator("code.audit-code")).toHaveText(events.map((e) => e.action));
}

/** The rows of events of `action`. */
function rowsOf(page: Page, action: string) {
  return rows(page).filter({ has: page.locator("code.audit-code", { hasText: new RegExp(`^${action.replace(".", "\\.")}$`) }) });
}

async function openAudit(page: Page, server: Server): Promise<void> {
  await signIn(page, server, server.admin);
  await page.getByRole("link", { name: "Audit log" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Audit log" })).toBeVisible();
  await expect(rows(page).first()).toBeVisible();
}

async function applyFilters(page: Page): Promise<void> {
  await page.getByRole("button", { name: "Apply filters" }).click();
}

async function demote(api: Api, user: Person): Promise<void> {
  await api.users.updateUserRole({ userId: user.userId, role: Role.NANO_READ_ONLY });
}

async function deleteUser(api: Api, user: Person): Promise<void> {
  const first = await api.users.deleteUser({ userId: user.userId });
  if (first.outcome.case !== "confirmationRequired") throw new Error("DeleteUser asked no confirmation");
  await api.users.deleteUser({ userId: user.userId, confirmationToken: first.outcome.value.confirmationToken });
}

test("the audit log shows the organisation's events as ListAuditEvents answers them, readable", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  const api = await adminApi(server);
  await demote(api, user);
  await openAudit(page, server);
  const events = await firstPage(api);
  await expectRowsOf(page, events);

  const roleChange = events.find((e) => e.action === "user.update_role")!;
  const row = rowsOf(page, "user.update_role");
  await expect(row).toHaveCount(1);
  await expect(row.getByRole("cell")).toHaveText([
    timeText(roleChange),
    server.admin.email,
    "Role changeduser.update_role",
    `${user.email}user`,
    `nanoUser → became nanoReadOnlyrequest ${roleChange.requestId}`,
    roleChange.sequence.toString(),
  ]);
  // The members' change names the user by email, not by id.
  await expect(rows(page).filter({ hasText: `Role changed: ${user.email}` })).toHaveCount(1);
  await expect(page.getByTestId("audit-summary")).toHaveText(`${events.length} events on page 1, newest first.`);
  await expectAccessible(page, "audit log");
});

test("every filter of ListAuditEvents works from the form and agrees with the service", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  const api = await adminApi(server);
  await demote(api, user);
  await openAudit(page, server);

  // Action
  await page.getByLabel("Action").selectOption({ label: "Role changed" });
  await applyFilters(page);
  await expectRowsOf(page, await firstPage(api, { action: "user.update_role" }));
  await expect(rows(page)).toHaveCount(1);

  // Actor, given by email
  await page.getByLabel("Action").selectOption({ label: "All actions" });
  await page.getByLabel("Actor").fill(user.email);
  await applyFilters(page);
  const byUser = await firstPage(api, { actor: `user:${user.userId}` });
  expect(byUser.length).toBeGreaterThan(0);
  await expectRowsOf(page, byUser);
  await expect(rows(page).locator("td:nth-child(2)")).toHaveText(byUser.map(() => user.email));

  // Target, given by email
  await page.getByLabel("Actor").fill("");
  await page.getByLabel("Target").fill(user.email);
  await applyFilters(page);
  await expectRowsOf(page, await firstPage(api, { targetId: user.userId }));

  // Time range: the role change's second, then a range with nothing in it
  await page.getByLabel("Target").fill("");
  const roleChange = (await firstPage(api, { action: "user.update_role" }))[0]!;
  const at = timestampDate(roleChange.occurredAt!);
  const second = (offset: number) => new Date(Math.floor(at.getTime() / 1000) * 1000 + offset);
  await page.getByLabel("From (UTC)").fill(second(0).toISOString().slice(0, 19));
  await page.getByLabel("Until (UTC)").fill(second(1000).toISOString().slice(0, 19));
  await applyFilters(page);
  const inThatSecond = await firstPage(api, {
    startTime: timestampFromDate(second(0)),
    endTime: timestampFromDate(second(1000)),
  });
  expect(inThatSecond.map((e) => e.id)).toContain(roleChange.id);
  await expectRowsOf(page, inThatSecond);
  const nextYear = new Date(Date.now() + 365 * 86_400_000).toISOString().slice(0, 19);
  await page.getByLabel("From (UTC)").fill(nextYear);
  await page.getByLabel("Until (UTC)").fill("");
  await applyFilters(page);
  await expect(page.getByTestId("audit-empty")).toContainText("No audit events match these filters");
  await expect(rows(page)).toHaveCount(0);
  await expectAccessible(page, "audit log, nothing matches");

  // After a change of the feed: oldest first from there
  await page.getByLabel("From (UTC)").fill("");
  await page.getByLabel("After change #").fill((roleChange.sequence - 1n).toString());
  await applyFilters(page);
  await expectRowsOf(page, await firstPage(api, { afterSequence: roleChange.sequence - 1n }));
  await expect(rows(page).first().locator("td.audit-sequence")).toHaveText(roleChange.sequence.toString());
  await expect(page.getByTestId("audit-summary")).toContainText("oldest first");

  // What the form cannot send is said next to it, and nothing is asked
  await page.getByLabel("After change #").fill("");
  await page.getByLabel("Actor").fill("nobody@example.com");
  await applyFilters(page);
  await expect(page.getByRole("alert")).toHaveText("No member has the email nobody@example.com.");
  await page.getByLabel("Actor").fill("");
  await page.getByLabel("From (UTC)").fill("2026-01-02T00:00:00");
  await page.getByLabel("Until (UTC)").fill("2026-01-01T00:00:00");
  await applyFilters(page);
  await expect(page.getByRole("alert")).toHaveText("From must be before Until.");
  await expectAccessible(page, "audit log, a filter refused");

  await page.getByRole("button", { name: "Clear filters" }).click();
  await expect(page.getByLabel("From (UTC)")).toHaveValue("");
  await expectRowsOf(page, await firstPage(api));
});

test("live: a change made elsewhere shows at the top within a second, when the filter matches", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  const other = await server.addUser(Role.NANO_USER);
  const colleague = server.api(await server.tokenOf(await server.addUser(Role.NANO_ADMIN)));
  await openAudit(page, server);

  await demote(colleague, user);
  const roleChange = rowsOf(page, "user.update_role");
  await expect(roleChange).toHaveCount(1, { timeout: 1_000 });
  await expect(roleChange.locator("td:nth-child(4)")).toHaveText(`${user.email}user`);
  // At the top: the change's events are the newest.
  const sequence = await roleChange.locator("td.audit-sequence").textContent();
  await expect(rows(page).first().locator("td.audit-sequence")).toHaveText(sequence ?? "");

  // A filter that the next change does not match keeps the list as it is;
  // one it matches shows the change.
  await page.getByLabel("Action").selectOption({ label: "User deleted" });
  await applyFilters(page);
  await expect(page.getByTestId("audit-empty")).toBeVisible();
  await colleague.users.updateUserRole({ userId: other.userId, role: Role.NANO_READ_ONLY });
  await deleteUser(colleague, user);
  await expect(rows(page)).toHaveCount(1, { timeout: 1_000 });
  await expect(rows(page).first().locator("td:nth-child(4)")).toHaveText(`${user.email}user`);
  await expect(rows(page).filter({ hasText: other.email })).toHaveCount(0);
});

test("pages of 25 events, forwards and back, as the service pages them; newer events wait behind a button", async ({
  server,
  page,
}) => {
  const api = await adminApi(server);
  const user = await server.addUser(Role.NANO_USER);
  for (let i = 0; i < 6; i++) {
    await api.users.updateUserRole({ userId: user.userId, role: i % 2 === 0 ? Role.NANO_READ_ONLY : Role.NANO_USER });
  }
  await openAudit(page, server);
  const first = await api.audit.listAuditEvents({ pageSize: 25 });
  expect(first.nextPageToken).not.toBe("");
  const second = await api.audit.listAuditEvents({ pageSize: 25, pageToken: first.nextPageToken });
  await expectRowsOf(page, first.events);
  await expect(page.getByRole("button", { name: "Previous page" })).toBeDisabled();

  await page.getByRole("button", { name: "Next page" }).click();
  await expectRowsOf(page, second.events);
  await expect(page.getByText("Page 2", { exact: true })).toBeVisible();
  await expect(page.getByRole("region", { name: /Audit events/ })).toBeFocused();
  await page.getByRole("button", { name: "Previous page" }).click();
  await expectRowsOf(page, first.events);

  // On a later page, a new change does not move the rows under the reader.
  await page.getByRole("button", { name: "Next page" }).click();
  await expectRowsOf(page, second.events);
  await api.users.updateUserRole({ userId: user.userId, role: Role.NANO_ADMIN });
  const newer = page.getByRole("button", { name: "1 new change: show the newest" });
  await expect(newer).toBeVisible();
  await expectRowsOf(page, second.events);
  await expectAccessible(page, "audit log, page 2 with newer events waiting");
  await newer.click();
  await expect(page.getByText("Page 1", { exact: true })).toBeVisible();
  await expect(rows(page).filter({ hasText: "nanoUser → became nanoAdmin" })).toHaveCount(1);
  await expectRowsOf(page, await firstPage(api));
});

test("the audit log with the keyboard only", async ({ server, page }) => {
  const api = await adminApi(server);
  const user = await server.addUser(Role.NANO_USER);
  for (let i = 0; i < 6; i++) {
    await api.users.updateUserRole({ userId: user.userId, role: i % 2 === 0 ? Role.NANO_READ_ONLY : Role.NANO_USER });
  }
  await signIn(page, server, server.admin);
  await tabTo(page, "link", "Audit log");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Audit log" })).toBeVisible();
  await expect(rows(page).first()).toBeVisible();

  await tabTo(page, "textbox", "Actor");
  await page.keyboard.type(user.email);
  await tabTo(page, "button", "Apply filters");
  await page.keyboard.press("Enter");
  await expectRowsOf(page, await firstPage(api, { actor: `user:${user.userId}` }));

  await tabTo(page, "button", "Clear filters");
  await page.keyboard.press("Space");
  await expect(page.getByLabel("Actor")).toHaveValue("");
  await expectRowsOf(page, await firstPage(api));

  await tabTo(page, "button", "Next page", 90);
  await page.keyboard.press("Enter");
  await expect(page.getByText("Page 2", { exact: true })).toBeVisible();
  await expect(page.getByRole("region", { name: /Audit events/ })).toBeFocused();
  await tabTo(page, "button", "Previous page");
  await page.keyboard.press("Enter");
  await expect(page.getByText("Page 1", { exact: true })).toBeVisible();
});

test("the audit log at 360 px: no page-wide scroll, filters and paging reachable", async ({ server, page }) => {
  const api = await adminApi(server);
  await demote(api, await server.addUser(Role.NANO_USER));
  await page.setViewportSize({ width: 360, height: 740 });
  await openAudit(page, server);
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  await expectAccessible(page, "audit log at 360 px");
  await page.getByLabel("Action").selectOption({ label: "Role changed" });
  await page.getByRole("button", { name: "Apply filters" }).click();
  await expect(rows(page)).toHaveCount(1);
  await page.getByRole("button", { name: "Clear filters" }).click();
  await expect(page.getByRole("button", { name: "Next page" })).toBeVisible();
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
});

test("a member without audit.read is not offered the log, and the service refuses it", async ({ server, page }) => {
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, user);
  await expect(page.getByRole("link", { name: "My account" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Audit log" })).toHaveCount(0);
  await page.evaluate(() => {
    window.location.hash = "#/audit";
  });
  await expect(page.getByRole("heading", { level: 1, name: "Acme Streaming" })).toBeVisible();
  const refused = await server
    .api(await server.tokenOf(user))
    .audit.listAuditEvents({})
    .then(
      () => undefined,
      (error: unknown) => failureOf(error),
    );
  expect(refused?.code).toBe(Code.PermissionDenied);
  expect(refused?.reason).toBe("PERMISSION_MISSING");
});
