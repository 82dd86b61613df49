// An admin demotes another admin whose page is open (issue 27): a role
// change renews the demoted user's tokenKey, so their session ends. Their
// page follows the change feed, whose watch the service ends with
// TOKEN_REVOKED; the console then leaves for the sign-in page with the
// revoked-access message, within a second. The token that page used is
// refused by the service from then on.
import type { Locator, Page } from "@playwright/test";
import { Code } from "@connectrpc/connect";
import { failureOf } from "../src/errors";
import { expect, Role, signIn, test } from "./fixtures";
import { expectAccessible } from "./a11y";

const REVOKED =
  "Your access was revoked: an administrator changed your role or renewed your token key, or your password changed. Sign in again.";

/** Opens the Users page and expands `email`'s row; the locator of its actions. */
async function expandUser(page: Page, email: string): Promise<Locator> {
  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: "Users" }).click();
  const row = page.getByRole("button", { name: email, exact: true });
  await row.click();
  await expect(row).toHaveAttribute("aria-expanded", "true");
  return page.getByRole("group", { name: `Actions for ${email}` });
}

test("a demoted admin's open page loses the admin actions within a second and the server refuses its token", async ({ server, page, newPage }) => {
  const b = await server.addUser(Role.NANO_ADMIN);
  const c = await server.addUser(Role.NANO_USER);

  const pageOfB = await newPage();
  let tokenOfB = "";
  pageOfB.on("request", (request) => {
    const authorization = request.headers()["authorization"];
    if (authorization !== undefined) tokenOfB = authorization.replace(/^Bearer /, "");
  });
  await signIn(pageOfB, server, b);
  const actionsOfB = await expandUser(pageOfB, c.email);
  await expect(actionsOfB.getByRole("button", { name: "Delete", exact: true })).toBeVisible();
  const sectionsOfB = pageOfB.getByRole("navigation", { name: "Sections" });
  await expect(sectionsOfB.getByRole("link", { name: "Invites" })).toBeVisible();
  expect(tokenOfB).not.toBe("");

  await signIn(page, server, server.admin);
  const actions = await expandUser(page, b.email);
  await actions.getByRole("button", { name: "Edit role", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: `Edit the role of ${b.email}` });
  await dialog.getByRole("radio", { name: "nanoUser" }).check();
  await dialog.getByRole("button", { name: "Continue" }).click();
  await dialog.getByRole("button", { name: "Change role" }).click();
  await expect(
    page
      .getByRole("status")
      .getByText(`${b.email} is now nanoUser: their tokens and sessions stopped working; no pending invites were revoked.`, {
        exact: true,
      }),
  ).toBeVisible();

  // Within a second of the answer, B's page shows no admin action any more:
  // B is on the sign-in page, told why.
  await expect(pageOfB.getByTestId("sign-in-notice")).toHaveText(REVOKED, { timeout: 1500 });
  await expect(actionsOfB).toHaveCount(0, { timeout: 1500 });
  await expect(sectionsOfB).toHaveCount(0, { timeout: 1500 });
  await expectAccessible(pageOfB, "sign-in after a revoked role");

  // A forced call with the token B's page used is refused.
  const forced = await server
    .api(tokenOfB)
    .users.deleteUser({ userId: c.userId, confirmationToken: "" })
    .then(() => undefined, failureOf);
  expect(forced).toMatchObject({ code: Code.Unauthenticated, reason: "TOKEN_REVOKED" });
  const roleOf = async (userId: string) =>
    (await server.sql<{ role: string }>("SELECT role FROM users WHERE id = $1", [userId]))[0]?.role;
  expect(await roleOf(b.userId)).toBe("nanoUser");
  expect(await roleOf(c.userId)).toBe("nanoUser");

  // Signed in again, B is a nanoUser: the users without any action.
  await signIn(pageOfB, server, b);
  await expect(pageOfB.getByTestId("me-role")).toHaveText("nanoUser");
  await expect(sectionsOfB.getByRole("link")).toHaveText(["Organisation", "Users", "My account"]);
  await expandUser(pageOfB, c.email);
  await expect(pageOfB.getByText("Your role may see this user but not change it.")).toBeVisible();
  await expect(pageOfB.getByRole("group", { name: /^Actions for/ })).toHaveCount(0);
});
