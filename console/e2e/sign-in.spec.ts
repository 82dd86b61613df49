import { expect, Role, signIn, test } from "./fixtures";
import { expectAccessible, tabTo } from "./a11y";

test("the bootstrap admin signs in, sees the organisation overview and signs out", async ({ page, server }) => {
  await page.goto(server.url);
  await expectAccessible(page, "sign-in");
  await signIn(page, server, server.admin);
  await expect(page.getByRole("heading", { level: 1, name: "Acme Streaming" })).toBeVisible();
  await expect(page.getByTestId("user-count")).toHaveText("1");
  await expect(page.getByTestId("role-count-nanoAdmin")).toContainText("1");
  await expect(page.getByTestId("api-key-fingerprint")).not.toBeEmpty();
  await expectAccessible(page, "organisation overview");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByTestId("sign-in-notice")).toHaveText("You signed out.");
});

test("a wrong password is refused without saying whether the account exists", async ({ page, server }) => {
  await page.goto(server.url);
  await page.getByLabel("Email").fill(server.admin.email);
  await page.getByLabel("Password").fill("wrong password entirely");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("The email or the password is wrong.");
  await page.getByLabel("Email").fill("nobody@example.com");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("The email or the password is wrong.");
});

test("signing in with the keyboard only", async ({ page, server }) => {
  const user = await server.addUser(Role.NANO_READ_ONLY);
  await page.goto(server.url);
  await tabTo(page, "textbox", "Email");
  await page.keyboard.type(user.email);
  await page.keyboard.press("Tab");
  await page.keyboard.type(user.password);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("me-role")).toHaveText("nanoReadOnly");
});
