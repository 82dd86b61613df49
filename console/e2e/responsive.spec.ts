// The console on a phone (360 x 740): every page the admin sees fits the
// width without scrolling the page sideways (tables scroll inside their own
// box), and its heading and first action are on screen or reachable.
import type { Locator, Page } from "@playwright/test";
import { expect, signIn, test } from "./fixtures";

const PHONE = { width: 360, height: 740 };

/** The pages an admin sees, in the navigation's order. */
const ADMIN_PAGES = ["Organisation", "Users", "Invites", "Audit log", "My account"];

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
  await expect(nav.getByRole("link")).toHaveText(ADMIN_PAGES);

  for (const label of ADMIN_PAGES) {
    const tab = nav.getByRole("link", { name: label, exact: true });
    await tab.click();
    await expect(tab).toHaveAttribute("aria-current", "page");
    const main = page.getByRole("main");
    const heading = main.getByRole("heading", { level: 1 });
    await expect(heading, label).toHaveCount(1);
    await expectReachable(heading, `${label}: its heading`);
    // The page's first action: the first enabled button of its content.
    const action = main.locator("button:not([disabled])").first();
    await expectReachable(action, `${label}: its first action`);
    await expectNoSidewaysScroll(page, label);
  }
});
