// The console on a phone (360 x 740): every page the admin sees fits the
// width without scrolling the page sideways (tables scroll inside their own
// box), and its heading and first action are on screen or reachable.
import type { Locator, Page } from "@playwright/test";
import { expect, signIn, test } from "./fixtures";

const PHONE = { width: 360, height: 740 };

/** The pages an admin sees, in the navigation's order: each one's heading and first action. */
const ADMIN_PAGES: Array<{ label: string; heading: string; action: string }> = [
  { label: "Organisation", heading: "Acme Streaming", action: "Rotate API key" },
  { label: "Users", heading: "Users", action: "Export CSV" },
  { label: "Invites", heading: "Invites", action: "Create invite" },
  { label: "Audit log", heading: "Audit log", action: "Apply filters" },
  { label: "My account", heading: "My account", action: "Change password" },
];

async function expectNoSidewaysScroll(page: Page, what: string): Promise<void> {
  const widths = await page.evaluate(() => ({
    document: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    viewport: window.innerWidth,
  }));
  expect(widths.viewport, what).toBe(PHONE.width);
  expect(widths.document, `${what}: the page's width`).toBeLessThanOrEqual(PHONE.width);
  expect(widths.body, `${what}: the body's width`).toBeLessThanOrEqual(PHONE.width);
}

/** Visible, and within the viewport's width once scrolled to (no sideways scroll needed). */
async function expectReachable(target: Locator, what: string): Promise<void> {
  await expect(target, what).toBeVisible();
  await target.scrollIntoViewIfNeeded();
  await expect(target, what).toBeInViewport();
  const box = await target.boundingBox();
  if (box === null) throw new Error(`${what} has no box`);
  expect(box.x, `${what}: left edge`).toBeGreaterThanOrEqual(0);
  expect(box.x + box.width, `${what}: right edge`).toBeLessThanOrEqual(PHONE.width);
}

test.use({ viewport: PHONE });

test("the sign-in page fits a phone", async ({ server, page }) => {
  await page.goto(server.url);
  await expectReachable(page.getByRole("heading", { level: 1, name: "Sign in to User Management" }), "the heading");
  await expectReachable(page.getByRole("button", { name: "Sign in" }), "the sign-in button");
  await expectNoSidewaysScroll(page, "sign-in");
});

test("every page the admin sees fits a phone, its heading and first action within reach", async ({ server, page }) => {
  await signIn(page, server, server.admin);
  await expectReachable(page.getByRole("button", { name: "Sign out" }), "sign out");
  const nav = page.getByRole("navigation", { name: "Sections" });
  await expect(nav.getByRole("link")).toHaveText(ADMIN_PAGES.map((p) => p.label));

  for (const { label, heading, action } of ADMIN_PAGES) {
    const tab = nav.getByRole("link", { name: label, exact: true });
    await tab.click();
    await expect(tab).toHaveAttribute("aria-current", "page");
    const main = page.getByRole("main");
    await expect(main.getByRole("heading", { level: 1 })).toHaveText([heading]);
    await expectReachable(main.getByRole("heading", { level: 1, name: heading }), `${label}: its heading`);
    await expectReachable(main.getByRole("button", { name: action, exact: true }), `${label}: ${action}`);
    await expectNoSidewaysScroll(page, label);
  }
});
