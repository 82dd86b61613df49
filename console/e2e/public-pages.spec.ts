// The pages reached without a session: "Forgot your password?" on the
// sign-in page, the reset page a mailed link opens (the mail read from a real
// SMTP server, tests/smtp_sink.py), and what both say about links that do
// not work.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Page } from "@playwright/test";
import { ADMIN_EMAIL, expect, PASSWORD, startServer, test, type Server } from "./fixtures";
import { expectAccessible, tabTo } from "./a11y";

const REQUESTED =
  "If an account uses this email, a link to choose a new password is on its way to it. The link works for 30 minutes.";
const RESET_INVALID =
  "This password reset link no longer works: it was already used, or it expired (a link works for 30 minutes). Ask for a new one on the sign-in page.";
const INCOMPLETE = "This link is incomplete: open it exactly as you received it, or ask for a new one.";
const CHANGED = "Your password was changed; sign in with the new one.";
const NEW_PASSWORD = "a brand new admin passphrase";

interface MailSink {
  address: string;
  /** The token of the reset link in the first mail to `to` (waits for it). */
  resetTokenFor(to: string): Promise<string>;
  stop(): Promise<void>;
}

/** tests/smtp_sink.py on a free port, writing each message it receives to a file. */
async function startMailSink(): Promise<MailSink> {
  const dir = await mkdtemp(path.join(tmpdir(), "console-mail-"));
  const script = path.resolve(import.meta.dirname, "../../tests/smtp_sink.py");
  const child: ChildProcess = spawn("python3", [script, "--dir", dir], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const address = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const listening = /listening on (\S+)/.exec(out);
      if (listening?.[1] !== undefined) resolve(listening[1]);
    });
    child.once("exit", (code) => reject(new Error(`the SMTP sink exited (${code}): ${stderr} (is aiosmtpd installed?)`)));
  });
  const mailTo = async (to: string): Promise<string | undefined> => {
    for (const name of (await readdir(dir)).filter((n) => n.endsWith(".eml"))) {
      const text = await readFile(path.join(dir, name), "utf8");
      if (new RegExp(`^X-Envelope-To: .*${to.replace(/[.]/g, "\\.")}`, "m").test(text)) return text;
    }
    return undefined;
  };
  return {
    address,
    resetTokenFor: async (to: string) => {
      let mail: string | undefined;
      await expect.poll(async () => (mail = await mailTo(to)) !== undefined, { timeout: 30_000 }).toBe(true);
      // Quoted-printable: soft line breaks and "=3D" for "=".
      const body = (mail ?? "").replace(/=\r?\n/g, "").replace(/=3D/gi, "=");
      const token = /\/reset-password#token=([A-Za-z0-9_-]+)/.exec(body)?.[1];
      if (token === undefined) throw new Error(`no reset link in the mail to ${to}:\n${body}`);
      return token;
    },
    stop: async () => {
      child.stdin?.end();
      child.kill("SIGTERM");
      if (child.exitCode === null) await new Promise((resolve) => child.once("exit", resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// A server that mails through the sink (its links name another host: the
// tests take the token and open it on the server's own address).
const mailTest = test.extend<{ mailSink: MailSink; server: Server }>({
  // eslint-disable-next-line no-empty-pattern
  mailSink: async ({}, use) => {
    const sink = await startMailSink();
    await use(sink);
    await sink.stop();
  },
  server: async ({ mailSink }, use) => {
    const { server, stop } = await startServer([
      "--smtp-url",
      `smtp://${mailSink.address}`,
      "--public-url",
      "https://dashboard.example.com",
    ]);
    await use(server);
    await stop();
  },
});

async function requestReset(page: Page, email: string): Promise<void> {
  await page.getByRole("button", { name: "Forgot your password?" }).click();
  const dialog = page.getByRole("dialog", { name: "Reset your password" });
  await dialog.getByLabel("Your account's email").fill(email);
  await dialog.getByRole("button", { name: "Send reset link" }).click();
  await expect(dialog.getByTestId("reset-requested")).toHaveText(REQUESTED);
}

async function fillNewPassword(page: Page, password: string): Promise<void> {
  await page.getByLabel("New password", { exact: true }).fill(password);
  await page.getByLabel("Repeat the password", { exact: true }).fill(password);
}

async function signInWith(page: Page, password: string): Promise<void> {
  await page.getByLabel("Email", { exact: true }).fill(ADMIN_EMAIL);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

mailTest("a password reset: asked for on the sign-in page, mailed, and set on the link's page", async ({
  mailSink,
  server,
  page,
  newPage,
}) => {
  await page.goto(server.url);
  await page.getByLabel("Email", { exact: true }).fill(ADMIN_EMAIL);
  await page.getByRole("button", { name: "Forgot your password?" }).click();
  const dialog = page.getByRole("dialog", { name: "Reset your password" });
  // The email typed for signing in is carried over.
  await expect(dialog.getByLabel("Your account's email")).toHaveValue(ADMIN_EMAIL);
  await expectAccessible(page, "forgot password dialog");
  await dialog.getByRole("button", { name: "Send reset link" }).click();
  await expect(dialog.getByTestId("reset-requested")).toHaveText(REQUESTED);
  await expectAccessible(page, "forgot password dialog, sent");
  await dialog.getByRole("button", { name: "Back to sign in" }).click();

  const token = await mailSink.resetTokenFor(ADMIN_EMAIL);
  await page.goto(`${server.url}/reset-password#token=${token}`);
  await expect(page.getByRole("heading", { level: 1, name: "Choose a new password" })).toBeVisible();
  await expect(page).toHaveURL(`${server.url}/reset-password`);
  await expectAccessible(page, "reset password");
  await fillNewPassword(page, NEW_PASSWORD);
  await page.getByRole("button", { name: "Change password" }).click();

  await expect(page.getByTestId("sign-in-notice")).toHaveText(CHANGED);
  await expect(page).toHaveURL(`${server.url}/`);
  await expectAccessible(page, "sign-in after a reset");
  await signInWith(page, PASSWORD);
  await expect(page.getByRole("alert")).toHaveText("The email or the password is wrong.");
  await signInWith(page, NEW_PASSWORD);
  await expect(page.getByTestId("me-email")).toHaveText(ADMIN_EMAIL);

  // The link works once (opened in another browser: this page stays signed in).
  const again = await newPage();
  await again.goto(`${server.url}/reset-password#token=${token}`);
  await fillNewPassword(again, "yet another passphrase");
  await again.getByRole("button", { name: "Change password" }).click();
  await expect(again.getByTestId("link-invalid")).toHaveText(RESET_INVALID);
  await expectAccessible(again, "reset password, link invalid");
  expect(await server.sql("SELECT count(*)::int AS used FROM password_resets WHERE used_at IS NOT NULL")).toEqual([
    { used: 1 },
  ]);
});

test("asking for a reset answers the same for an unknown email as for a member's", async ({ server, page }) => {
  await page.goto(server.url);
  await requestReset(page, ADMIN_EMAIL);
  const known = await page.getByRole("dialog").innerText();
  await page.getByRole("button", { name: "Back to sign in" }).click();
  await requestReset(page, "nobody-here@example.com");
  expect(await page.getByRole("dialog").innerText()).toBe(known);
});

test("links without a working token say so plainly", async ({ server, page }) => {
  await page.goto(`${server.url}/reset-password#token=not-a-real-token`);
  await fillNewPassword(page, NEW_PASSWORD);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByTestId("link-invalid")).toHaveText(RESET_INVALID);

  await page.goto(`${server.url}/reset-password`);
  await expect(page.getByTestId("link-invalid")).toHaveText(INCOMPLETE);
  await page.goto(`${server.url}/accept-invite`);
  await expect(page.getByTestId("link-invalid")).toHaveText(INCOMPLETE);
  await expectAccessible(page, "accept invite, no token");
  await page.getByRole("link", { name: "Go to the sign-in page" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Sign in to User Management" })).toBeVisible();
});

test("asking for a reset with the keyboard only", async ({ server, page }) => {
  await page.goto(server.url);
  await tabTo(page, "button", "Forgot your password?");
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "Reset your password" });
  await expect(dialog.getByLabel("Your account's email")).toBeFocused();
  await page.keyboard.type(ADMIN_EMAIL);
  await page.keyboard.press("Enter");
  await expect(dialog.getByTestId("reset-requested")).toHaveText(REQUESTED);
  await expect(dialog.getByRole("button", { name: "Back to sign in" })).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(dialog).toBeHidden();
  await expect(page.getByRole("button", { name: "Forgot your password?" })).toBeFocused();

  await page.goto(`${server.url}/reset-password#token=not-a-real-token`);
  await tabTo(page, "textbox", "New password");
  await page.keyboard.type(NEW_PASSWORD);
  await page.keyboard.press("Tab");
  await page.keyboard.type(NEW_PASSWORD);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("link-invalid")).toHaveText(RESET_INVALID);
});

test("the public pages fit 360 px", async ({ server, page }) => {
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto(server.url);
  await requestReset(page, ADMIN_EMAIL);
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  await page.goto(`${server.url}/reset-password#token=not-a-real-token`);
  await expect(page.getByRole("button", { name: "Change password" })).toBeInViewport();
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
});
