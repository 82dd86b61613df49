// Accessibility checks shared by every spec: axe-core on the page as it is
// (WCAG 2.1 A and AA rules), failing on any serious or critical violation.
import AxeBuilder from "@axe-core/playwright";
import { expect, type Page } from "@playwright/test";

export async function expectAccessible(page: Page, view: string): Promise<void> {
  const results = await new AxeBuilder({ page })
    .withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"])
    .analyze();
  const serious = results.violations
    .filter((violation) => violation.impact === "serious" || violation.impact === "critical")
    .map((violation) => `${violation.id} (${violation.impact}): ${violation.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  expect(serious, `axe on ${view}`).toEqual([]);
}

/** Presses Tab until the element named `name` with `role` has focus (at most `limit` presses). */
export async function tabTo(
  page: Page,
  role: Parameters<Page["getByRole"]>[0],
  name: string | RegExp,
  limit = 60,
): Promise<void> {
  const target = page.getByRole(role, { name }).first();
  for (let i = 0; i < limit; i++) {
    if (await target.evaluate((element) => element === document.activeElement).catch(() => false)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`${role} "${name}" never got the focus in ${limit} Tab presses`);
}
