// The page follows the change feed: what another admin changes shows within
// a second without a reload, and when the feed cannot resume where the page
// left it, the page reloads its state instead of showing a stale one.
import { connect, createServer as createTcpServer, type AddressInfo, type Socket } from "node:net";
import type { Browser, Page } from "@playwright/test";
import { Code } from "@connectrpc/connect";
import { expect, PASSWORD, Role, signIn, test, type Api, type Server } from "./fixtures";
import { expectAccessible } from "./a11y";

const WATCH = "/usermgmt.v1.ChangeService/WatchChanges";
const GET_ORGANISATION = "/usermgmt.v1.OrganisationService/GetOrganisation";

function roleCount(page: Page, role: string) {
  return page.getByTestId(`role-count-${role}`).locator(".count");
}

/** The overview shows exactly these counts. */
async function expectCounts(page: Page, counts: { total: number; admin: number; user: number; readOnly: number }) {
  const soon = { timeout: 1_000 };
  await expect(page.getByTestId("user-count")).toHaveText(String(counts.total), soon);
  await expect(roleCount(page, "nanoAdmin")).toHaveText(String(counts.admin), soon);
  await expect(roleCount(page, "nanoUser")).toHaveText(String(counts.user), soon);
  await expect(roleCount(page, "nanoReadOnly")).toHaveText(String(counts.readOnly), soon);
}

async function colleagueOf(server: Server): Promise<Api> {
  return server.api(await server.tokenOf(await server.addUser(Role.NANO_ADMIN)));
}

async function confirmed<T extends { outcome: { case: string | undefined; value?: unknown } }>(
  step: (confirmationToken: string) => Promise<T>,
): Promise<void> {
  const first = await step("");
  if (first.outcome.case !== "confirmationRequired") throw new Error("no confirmation asked");
  await step((first.outcome.value as { confirmationToken: string }).confirmationToken);
}

test("the overview's counts follow another admin's changes within a second, without a reload", async ({
  server,
  page,
}) => {
  const colleague = await colleagueOf(server);
  await signIn(page, server, server.admin);
  await expectCounts(page, { total: 2, admin: 2, user: 0, readOnly: 0 });
  let navigations = 0;
  page.on("framenavigated", () => (navigations += 1));

  const created = await colleague.users.createUser({ email: "new@example.com", role: Role.NANO_USER, password: PASSWORD });
  const userId = created.user!.id;
  await expectCounts(page, { total: 3, admin: 2, user: 1, readOnly: 0 });

  await colleague.users.updateUserRole({ userId, role: Role.NANO_READ_ONLY });
  await expectCounts(page, { total: 3, admin: 2, user: 0, readOnly: 1 });

  await confirmed((confirmationToken) => colleague.users.deleteUser({ userId, confirmationToken }));
  await expectCounts(page, { total: 2, admin: 2, user: 0, readOnly: 0 });
  expect(navigations).toBe(0);

  const organisation = (await colleague.organisation.getOrganisation({})).organisation!;
  expect(organisation.userCount).toBe(2);
});

test("a suspension elsewhere shows in the open audit log within a second", async ({ server, page }) => {
  const colleague = await colleagueOf(server);
  const user = await server.addUser(Role.NANO_USER);
  await signIn(page, server, server.admin);
  await page.getByRole("link", { name: "Audit log" }).click();
  await expect(page.getByTestId("audit-row").first()).toBeVisible();

  await confirmed((confirmationToken) => colleague.users.suspendUser({ userId: user.userId, confirmationToken }));
  const suspended = page
    .getByTestId("audit-row")
    .filter({ has: page.locator("code.audit-code", { hasText: /^user\.suspend$/ }) });
  await expect(suspended).toHaveCount(1, { timeout: 1_000 });
  await expect(suspended.locator("td:nth-child(4)")).toHaveText(`${user.email}user`);
});

/** A page of the admin reaching the server through a relay the test can cut. */
async function adminThroughRelay(server: Server, browser: Browser, problems: string[]) {
  // The relay stands for a proxy or a network that drops the connections.
  const relay = await relayTo(new URL(server.url));
  const context = await browser.newContext();
  const page = await context.newPage();
  // Only the watch's failures while the relay is cut are expected.
  let cut = false;
  page.on("console", (message) => {
    const expected = cut && message.text().includes("net::ERR_");
    if (message.type() === "error" && !expected) problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    const expected = request.url().endsWith(WATCH) && (cut || request.failure()?.errorText === "net::ERR_ABORTED");
    if (!expected) problems.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ""}`);
  });
  // The watches the service refused: their code, and ErrorInfo's reason as it appears in the details.
  const refusedWatches: string[] = [];
  page.on("response", (response) => {
    const status = response.headers()["grpc-status"];
    if (!response.url().endsWith(WATCH) || status === undefined || status === "0") return;
    const details = Buffer.from(response.headers()["grpc-status-details-bin"] ?? "", "base64").toString("latin1");
    refusedWatches.push(`${Code[Number(status)]} ${/[A-Z][A-Z_]{5,}/.exec(details)?.[0] ?? ""}`);
  });
  let organisationReads = 0;
  page.on("request", (request) => {
    if (request.url().endsWith(GET_ORGANISATION)) organisationReads += 1;
  });
  await signIn(page, { ...server, url: relay.url }, server.admin);
  await expect(page.getByText("Live updates on")).toBeAttached();
  return {
    page,
    refusedWatches,
    organisationReads: () => organisationReads,
    /** Drops the page's connections and keeps it away until `reconnect`. */
    disconnect: async () => {
      cut = true;
      relay.cut();
      await expect(page.getByText("Live updates reconnecting")).toBeAttached();
    },
    reconnect: async () => {
      relay.restore();
      await expect(page.getByText("Live updates on")).toBeAttached({ timeout: 15_000 });
      cut = false;
    },
    close: async () => {
      await context.close();
      await relay.close();
    },
  };
}

test("a dropped connection resumes where it left: what changed meanwhile arrives, nothing is reloaded", async ({
  server,
  browser,
  problems,
}) => {
  const colleague = await colleagueOf(server);
  const user = await server.addUser(Role.NANO_USER);
  const admin = await adminThroughRelay(server, browser, problems);
  try {
    await expectCounts(admin.page, { total: 3, admin: 2, user: 1, readOnly: 0 });
    const readsBefore = admin.organisationReads();
    await admin.disconnect();
    await colleague.users.updateUserRole({ userId: user.userId, role: Role.NANO_READ_ONLY });
    await admin.reconnect();
    await expectCounts(admin.page, { total: 3, admin: 2, user: 0, readOnly: 1 });
    expect(admin.refusedWatches).toEqual([]);
    expect(admin.organisationReads()).toBe(readsBefore);
  } finally {
    await admin.close();
  }
});

test("when the feed cannot resume where the page left it, the page reloads its state", async ({
  server,
  browser,
  problems,
}) => {
  const colleague = await colleagueOf(server);
  const user = await server.addUser(Role.NANO_USER);
  const admin = await adminThroughRelay(server, browser, problems);
  try {
    await expectCounts(admin.page, { total: 3, admin: 2, user: 1, readOnly: 0 });
    const readsBefore = admin.organisationReads();
    await admin.disconnect();
    // While the page is away: a role changes, and the feed's retention
    // drops what the page's resume token points after (what pruning does
    // to the organisation's heads: src/store/feed_retention.rs).
    await colleague.users.updateUserRole({ userId: user.userId, role: Role.NANO_READ_ONLY });
    const pruned = await server.sql(
      "UPDATE change_heads SET pruned_through = head WHERE organisation_id = $1 RETURNING head",
      [server.organisationId],
    );
    expect(pruned).toHaveLength(1);
    await admin.reconnect();

    // The service refused the resume, and the page read the organisation again.
    expect(admin.refusedWatches).toEqual(["FailedPrecondition CHANGE_TOKEN_EXPIRED"]);
    await expectCounts(admin.page, { total: 3, admin: 2, user: 0, readOnly: 1 });
    expect(admin.organisationReads()).toBeGreaterThan(readsBefore);
    await expectAccessible(admin.page, "overview after a feed reset");

    // And it follows the feed again from there.
    await colleague.users.updateUserRole({ userId: user.userId, role: Role.NANO_USER });
    await expectCounts(admin.page, { total: 3, admin: 2, user: 1, readOnly: 0 });
  } finally {
    await admin.close();
  }
});

interface Relay {
  url: string;
  /** Drops every connection, and every new one until restored. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** A TCP relay to `target` on a port of its own. */
async function relayTo(target: URL): Promise<Relay> {
  const sockets = new Set<Socket>();
  let refusing = false;
  const relay = createTcpServer((client) => {
    if (refusing) return void client.destroy();
    const upstream = connect(Number(target.port), target.hostname);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", end);
      socket.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const { port } = relay.address() as AddressInfo;
  const dropAll = (): void => sockets.forEach((socket) => socket.destroy());
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      refusing = true;
      dropAll();
    },
    restore: () => {
      refusing = false;
    },
    close: async () => {
      dropAll();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}
