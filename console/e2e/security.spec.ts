// The console's defences as the browser meets them: the headers it receives,
// the content security policy refusing injected script and style, a page
// that no other origin can frame, and a session that leaves nothing behind
// in the browser's storage.
import type { Page, Response } from "@playwright/test";
import { expect, signIn, test, type Server } from "./fixtures";

const POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
  "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const NO_STORE = "no-store";
const IMMUTABLE = "public, max-age=31536000, immutable";

/** The headers every answer of the console carries, whatever its caching. */
function expectConsoleHeaders(headers: Record<string, string>, what: string): void {
  expect(headers["content-security-policy"], `${what}: content-security-policy`).toBe(POLICY);
  expect(headers["x-frame-options"], `${what}: x-frame-options`).toBe("DENY");
  expect(headers["x-content-type-options"], `${what}: x-content-type-options`).toBe("nosniff");
  expect(headers["referrer-policy"], `${what}: referrer-policy`).toBe("no-referrer");
}

/** The violations of the page's policy, recorded from the document's start. */
async function recordViolations(page: Page): Promise<void> {
  // Playwright injects init scripts itself: the page's policy does not apply to them.
  await page.addInitScript(() => {
    const seen: string[] = [];
    Object.assign(window, { __violations: seen });
    document.addEventListener("securitypolicyviolation", (event) => seen.push(event.violatedDirective));
  });
}

async function violations(page: Page): Promise<string[]> {
  return await page.evaluate(() => (window as unknown as { __violations: string[] }).__violations);
}

test("the document and its hashed assets arrive with the policy, no framing, no sniffing and the right caching", async ({
  server,
  page,
}) => {
  const responses: Response[] = [];
  page.on("response", (response) => responses.push(response));
  await page.goto(server.url);
  await expect(page.getByRole("heading", { level: 1, name: "Sign in to User Management" })).toBeVisible();

  const byPath = (path: string): Response[] => responses.filter((r) => new URL(r.url()).pathname === path);
  const [document] = byPath("/");
  if (document === undefined) throw new Error("the browser received no document for /");
  const documentHeaders = await document.allHeaders();
  expectConsoleHeaders(documentHeaders, "the document");
  expect(documentHeaders["content-type"]).toMatch(/^text\/html/);
  expect(documentHeaders["cache-control"], "the document").toBe(NO_STORE);

  const assets = responses.filter((r) => new URL(r.url()).pathname.startsWith("/assets/"));
  // The script and the stylesheet, in whichever order they arrived.
  const assetPaths = assets.map((r) => new URL(r.url()).pathname);
  expect(assetPaths).toHaveLength(2);
  expect(assetPaths).toEqual(
    expect.arrayContaining([
      expect.stringMatching(/^\/assets\/main-[A-Z0-9]{8,}\.css$/),
      expect.stringMatching(/^\/assets\/main-[A-Z0-9]{8,}\.js$/),
    ]),
  );
  for (const asset of assets) {
    const headers = await asset.allHeaders();
    expectConsoleHeaders(headers, asset.url());
    expect(headers["cache-control"], asset.url()).toBe(IMMUTABLE);
  }
});

test("the document's other names, which the mails' links open, arrive with the same headers", async ({ server, request }) => {
  for (const path of ["/index.html", "/accept-invite", "/reset-password"]) {
    const answer = await request.get(`${server.url}${path}`);
    expect(answer.status(), path).toBe(200);
    expectConsoleHeaders(answer.headers(), path);
    expect(answer.headers()["cache-control"], path).toBe(NO_STORE);
    expect(await answer.text(), path).toContain('<div id="app"></div>');
  }
});

test("the console itself runs without a single policy violation, signed in and on every page", async ({
  server,
  page,
}) => {
  await recordViolations(page);
  await signIn(page, server, server.admin);
  for (const link of await page.getByRole("navigation", { name: "Sections" }).getByRole("link").all()) {
    await link.click();
    await expect(link).toHaveAttribute("aria-current", "page");
  }
  expect(await violations(page)).toEqual([]);
});

// These tests expect the browser to complain (a refused script, style or
// frame), so they use a page of their own rather than the fixtures' `page`,
// which fails a test on any console error, and check the complaints.
test.describe("what the policy refuses", () => {
  /** A fresh page whose console errors are collected into `errors`. */
  async function pageWithErrors(context: import("@playwright/test").BrowserContext, errors: string[]): Promise<Page> {
    const page = await context.newPage();
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text());
    });
    page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
    return page;
  }

  test("an injected inline script does not run", async ({ server, context }) => {
    const errors: string[] = [];
    const page = await pageWithErrors(context, errors);
    await recordViolations(page);
    await signIn(page, server, server.admin);

    await page.evaluate(() => {
      const script = document.createElement("script");
      script.textContent = "window.__pwned = 1";
      document.body.append(script);
    });
    await expect.poll(() => violations(page)).toEqual(["script-src-elem"]);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    // An event handler attribute is inline script too.
    await page.evaluate(() => {
      document.body.insertAdjacentHTML("beforeend", '<img src="data:," data-testid="injected" onload="window.__pwned = 2">');
    });
    await expect.poll(() => violations(page)).toEqual(["script-src-elem", "script-src-attr"]);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(errors).toEqual([
      expect.stringMatching(/inline script violates .*script-src 'self'.*blocked/),
      expect.stringMatching(/inline event handler violates .*script-src 'self'.*blocked/),
    ]);
  });

  test("injected inline style, as an attribute or an element, is not applied", async ({ server, context }) => {
    const errors: string[] = [];
    const page = await pageWithErrors(context, errors);
    await recordViolations(page);
    await page.goto(server.url);
    await expect(page.getByRole("heading", { level: 1, name: "Sign in to User Management" })).toBeVisible();

    // Chromium may report one refused attribute more than once: the
    // directives refused are what counts.
    const refused = async (): Promise<string[]> => [...new Set(await violations(page))];
    await page.evaluate(() => {
      document.body.insertAdjacentHTML("beforeend", '<p data-testid="styled" style="color: rgb(255, 0, 0)">styled</p>');
    });
    await expect.poll(refused).toEqual(["style-src-attr"]);
    await page.evaluate(() => {
      document.body.insertAdjacentHTML("beforeend", '<style>[data-testid="styled"] { font-size: 77px }</style>');
    });
    await expect.poll(refused).toEqual(["style-src-attr", "style-src-elem"]);
    const styled = page.getByTestId("styled");
    await expect(styled).toHaveText("styled");
    await expect(styled).not.toHaveCSS("color", "rgb(255, 0, 0)");
    await expect(styled).not.toHaveCSS("font-size", "77px");
    expect(errors).not.toEqual([]);
    for (const error of errors) expect(error).toMatch(/^Applying inline style violates .*style-src 'self'.*blocked/);
  });

  test("a page of another origin cannot frame the console", async ({ server, context }) => {
    const errors: string[] = [];
    const page = await pageWithErrors(context, errors);
    const refusal = page.waitForEvent("console", {
      predicate: (message) => message.text().includes("frame-ancestors"),
      timeout: 10_000,
    });
    await page.setContent(`<iframe title="framed console" src="${server.url}/"></iframe>`);
    expect((await refusal).text().trim()).toBe(
      `Framing '${server.url}/' violates the following Content Security Policy directive: "frame-ancestors 'none'". The request has been blocked.`,
    );

    const frame = page.frames().find((f) => f !== page.mainFrame());
    if (frame === undefined) throw new Error("the iframe has no frame");
    await expect.poll(() => frame.url()).toBe("chrome-error://chromewebdata/");
    await expect(frame.locator("#app")).toHaveCount(0);
    await expect(frame.getByRole("heading", { name: "Sign in to User Management" })).toHaveCount(0);
    expect(errors).toEqual([expect.stringContaining("frame-ancestors 'none'")]);
  });
});

test("a signed-in session leaves no token in cookies or storage, and a reload asks to sign in again", async ({
  server,
  page,
  context,
}) => {
  await signIn(page, server, server.admin);
  await expect(page.getByRole("heading", { level: 1, name: "Acme Streaming" })).toBeVisible();
  expect(await context.cookies()).toEqual([]);
  expect(await storedEverywhere(page)).toEqual({ local: [], session: [], databases: [] });

  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Sign in to User Management" })).toBeVisible();
  expect(await storedEverywhere(page)).toEqual({ local: [], session: [], databases: [] });
  // The session itself stays open at the service until it expires or is ended.
  await expectSessionsOf(server, 1);
});

/** The keys in local and session storage and the names of IndexedDB databases. */
async function storedEverywhere(page: Page): Promise<{ local: string[]; session: string[]; databases: string[] }> {
  return await page.evaluate(async () => ({
    local: Object.keys(localStorage),
    session: Object.keys(sessionStorage),
    databases: (await indexedDB.databases()).map((d) => d.name ?? ""),
  }));
}

async function expectSessionsOf(server: Server, count: number): Promise<void> {
  const rows = await server.sql<{ n: string }>(
    "SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND ended_at IS NULL",
    [server.admin.userId],
  );
  expect(Number(rows[0]?.n)).toBe(count);
}
