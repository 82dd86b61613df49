// The documentation's pictures of the console (docs/console/*.png), taken
// against a real server on a fresh database seeded with a dozen users:
//
//   npm run screenshots     (in console/, after `npm run build`)
//
// Run by Playwright like a spec (scripts/playwright.screenshots.config.ts),
// so it stands on the suite's fixtures and fails like a test when the page
// is not what the pictures should show.
import path from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import type { Page } from "@playwright/test";
import { expect, Role, signIn, test, type Server } from "../e2e/fixtures";
import { recompressed } from "./png";

const OUT = path.resolve(import.meta.dirname, "../../docs/console");
/** Pictures above this are too heavy for the repository. */
const MAX_BYTES = 120 * 1024;

const PEOPLE: Array<[string, Role]> = [
  ["lena.hoffmann@example.com", Role.NANO_ADMIN],
  ["marco.rossi@example.com", Role.NANO_USER],
  ["aiko.tanaka@example.com", Role.NANO_USER],
  ["samuel.okafor@example.com", Role.NANO_USER],
  ["julia.nowak@example.com", Role.NANO_READ_ONLY],
  ["pierre.lambert@example.com", Role.NANO_USER],
  ["sofia.garcia@example.com", Role.NANO_READ_ONLY],
  ["david.cohen@example.com", Role.NANO_USER],
  ["emma.johansson@example.com", Role.NANO_READ_ONLY],
  ["ravi.patel@example.com", Role.NANO_ADMIN],
  ["nina.petrova@example.com", Role.NANO_USER],
  ["tom.becker@example.com", Role.NANO_READ_ONLY],
];
/** Shown expanded, with its role dialog and a double confirmation. */
const SUBJECT = "marco.rossi@example.com";

async function seed(server: Server): Promise<void> {
  const people = [];
  for (const [email, role] of PEOPLE) people.push(await server.addUser(role, email));
  const admin = server.api(await server.tokenOf(server.admin));
  // One suspended user, for the state column.
  const suspended = people.find((p) => p.email === "samuel.okafor@example.com");
  if (suspended === undefined) throw new Error("the seed lost samuel.okafor");
  const first = await admin.users.suspendUser({ userId: suspended.userId, confirmationToken: "" });
  if (first.outcome.case !== "confirmationRequired") throw new Error("SuspendUser acted without a confirmation");
  await admin.users.suspendUser({ userId: suspended.userId, confirmationToken: first.outcome.value.confirmationToken });
  // Pending invites, for the invites page.
  await admin.users.createInvite({ email: "lukas.schmid@example.com", role: Role.NANO_USER });
  await admin.users.createInvite({ email: "chloe.martin@example.com", role: Role.NANO_READ_ONLY });
}

async function picture(page: Page, name: string): Promise<void> {
  const png = recompressed(await page.screenshot({ animations: "disabled", caret: "hide" }));
  expect(png.length, `${name}.png is ${png.length} bytes`).toBeLessThanOrEqual(MAX_BYTES);
  await mkdir(OUT, { recursive: true });
  await writeFile(path.join(OUT, `${name}.png`), png);
}

test("the console's pictures for docs/console.md", async ({ server, page }) => {
  await seed(server);
  await signIn(page, server, server.admin);

  await expect(page.getByTestId("user-count")).toHaveText(String(PEOPLE.length + 1));
  await picture(page, "overview");

  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: "Users" }).click();
  await expect(page.getByRole("button", { name: SUBJECT })).toBeVisible();
  await expect(page.getByTestId("users-total")).toContainText(String(PEOPLE.length + 1));
  await picture(page, "users");

  await page.getByRole("button", { name: SUBJECT }).click();
  const editRole = page.getByRole("button", { name: "Edit role" });
  await expect(editRole).toBeVisible();
  await picture(page, "user-expanded");

  await editRole.click();
  const roleDialog = page.getByRole("dialog");
  await expect(roleDialog).toBeVisible();
  await picture(page, "role-dialog");
  await page.keyboard.press("Escape");
  await expect(roleDialog).toBeHidden();

  await page.getByRole("button", { name: "Renew token" }).click();
  const confirm = page.getByRole("dialog");
  await confirm.getByRole("button", { name: "Continue" }).click();
  await expect(confirm.locator(".warning-box")).toBeVisible();
  await picture(page, "double-confirm");
  await page.keyboard.press("Escape");
  await expect(confirm).toBeHidden();
  // Sign out, so that the change feed's watch ends before the server stops.
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByTestId("sign-in-notice")).toHaveText("You signed out.");
});
