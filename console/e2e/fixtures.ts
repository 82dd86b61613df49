// What every browser test stands on: a real `usermgmt serve` on a fresh
// PostgreSQL database with a bootstrapped organisation, an API client of
// the same contract for arranging things, SQL for checking what the
// database holds, and a page that fails the test on any console error or
// failed request.
import { test as base, expect, type BrowserContext, type Page } from "@playwright/test";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createServer } from "node:net";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "../src/gen/usermgmt/v1/auth_service_pb";
import { UserService } from "../src/gen/usermgmt/v1/user_service_pb";
import { OrganisationService } from "../src/gen/usermgmt/v1/organisation_service_pb";
import { SessionService } from "../src/gen/usermgmt/v1/session_service_pb";
import { ApiTokenService } from "../src/gen/usermgmt/v1/api_token_service_pb";
import { AuditService } from "../src/gen/usermgmt/v1/audit_service_pb";
import { Role } from "../src/gen/usermgmt/v1/resources_pb";

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, "../..");
const binary = process.env.USERMGMT_BINARY ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, "target"), "debug/usermgmt");
const consoleDir = path.resolve(import.meta.dirname, "../dist");
const pgBase = process.env.PG_BASE ?? "postgres://postgres@127.0.0.1:5432";

export const ADMIN_EMAIL = "admin@example.com";
export const PASSWORD = "correct horse battery staple";

export interface Person {
  email: string;
  password: string;
  userId: string;
}

export interface Server {
  url: string;
  /** The PostgreSQL URL of the server's database (for CLI commands such as `usermgmt seed`). */
  databaseUrl: string;
  organisationId: string;
  apiKey: string;
  admin: Person;
  /** Rows of a query on the server's database. */
  sql<T extends pg.QueryResultRow = pg.QueryResultRow>(query: string, params?: unknown[]): Promise<T[]>;
  /** Clients of the contract that call with `accessToken` (or none). */
  api(accessToken?: string): Api;
  /** An access token of `person`, from a fresh Login. */
  tokenOf(person: Person): Promise<string>;
  /** A new member with `role` and the common password, through an invite. */
  addUser(role: Role, email?: string): Promise<Person>;
  /** The server's log so far. */
  log(): string;
}

export interface Api {
  auth: Client<typeof AuthService>;
  users: Client<typeof UserService>;
  organisation: Client<typeof OrganisationService>;
  sessions: Client<typeof SessionService>;
  apiTokens: Client<typeof ApiTokenService>;
  audit: Client<typeof AuditService>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function admin(query: string): Promise<void> {
  const client = new pg.Client({ connectionString: `${pgBase}/postgres` });
  await client.connect();
  try {
    await client.query(query);
  } finally {
    await client.end();
  }
}

function apiAt(url: string, accessToken?: string): Api {
  const withToken: Interceptor = (next) => (request) => {
    if (accessToken !== undefined) request.header.set("authorization", `Bearer ${accessToken}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({ baseUrl: url, interceptors: [withToken] });
  const client = <T extends DescService>(service: T): Client<T> => createClient(service, transport);
  return {
    auth: client(AuthService),
    users: client(UserService),
    organisation: client(OrganisationService),
    sessions: client(SessionService),
    apiTokens: client(ApiTokenService),
    audit: client(AuditService),
  };
}

async function waitUntilServing(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`usermgmt exited before serving:\n${log()}`);
    try {
      const response = await fetch(url);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`usermgmt did not serve ${url} within 60 s:\n${log()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Starts a server on a fresh database; returns it and its teardown. */
export async function startServer(extraArgs: string[] = []): Promise<{ server: Server; stop: () => Promise<void> }> {
  const database = `usermgmt_console_${randomBytes(6).toString("hex")}`;
  const databaseUrl = `${pgBase}/${database}`;
  const env = { ...process.env, DATABASE_URL: databaseUrl, RUST_LOG: process.env.RUST_LOG ?? "info" };
  const bootstrap = await run(
    binary,
    ["bootstrap", "--organisation", "Acme Streaming", "--email", ADMIN_EMAIL],
    { env: { ...env, USERMGMT_BOOTSTRAP_PASSWORD: PASSWORD } },
  );
  const created = JSON.parse(bootstrap.stdout) as { organisation_id: string; user_id: string; api_key: string };
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let output = "";
  const child = spawn(binary, ["serve", "--listen", `127.0.0.1:${port}`, "--console-dir", consoleDir, ...extraArgs], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  // DROP DATABASE … WITH (FORCE) at the end terminates connections the pool
  // may still be closing: that is expected, not an error of the test.
  pool.on("error", () => undefined);
  pool.on("connect", (client) => client.on("error", () => undefined));
  // The server drains its calls at SIGTERM, open watches of pages still
  // signed in included: it must end them and stop.
  const stop = async (): Promise<void> => {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const stopped = child.exitCode !== null || (await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]));
    if (!stopped) child.kill("SIGKILL");
    await pool.end();
    await admin(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    if (!stopped) throw new Error(`usermgmt did not stop within 15 s of SIGTERM:\n${output.slice(-4000)}`);
  };
  try {
    await waitUntilServing(url, child, () => output);
  } catch (error) {
    await stop();
    throw error;
  }
  const adminPerson: Person = { email: ADMIN_EMAIL, password: PASSWORD, userId: created.user_id };
  const server: Server = {
    url,
    databaseUrl,
    organisationId: created.organisation_id,
    apiKey: created.api_key,
    admin: adminPerson,
    sql: async <T extends pg.QueryResultRow>(query: string, params: unknown[] = []) =>
      (await pool.query<T>(query, params)).rows,
    api: (accessToken?: string) => apiAt(url, accessToken),
    tokenOf: async (person: Person) =>
      (await apiAt(url).auth.login({ email: person.email, password: person.password })).accessToken,
    addUser: async (role: Role, email?: string) => {
      const adminToken = await server.tokenOf(adminPerson);
      const address = email ?? `${Role[role].toLowerCase().replace(/_/g, "-")}-${randomBytes(3).toString("hex")}@example.com`;
      const invite = await apiAt(url, adminToken).users.createInvite({ email: address, role });
      const accepted = await apiAt(url).auth.acceptInvite({ inviteToken: invite.inviteToken, password: PASSWORD });
      return { email: address, password: PASSWORD, userId: accepted.userId };
    },
    log: () => output,
  };
  return { server, stop };
}

/** Signs `person` in on `page` through the sign-in form. */
export async function signIn(page: Page, server: Server, person: Person): Promise<void> {
  await page.goto(server.url);
  await page.getByLabel("Email").fill(person.email);
  await page.getByLabel("Password").fill(person.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByTestId("me-email")).toHaveText(person.email);
}

/**
 * Fails the test on any console error or failed request of `page`, except
 * the aborts of requests the page itself cancels (the change feed's watch,
 * closed at sign-out).
 */
export function watchForProblems(page: Page, problems: string[]): void {
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    const aborted = request.failure()?.errorText === "net::ERR_ABORTED";
    if (aborted && request.url().endsWith("/usermgmt.v1.ChangeService/WatchChanges")) return;
    problems.push(`request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText ?? ""}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
}

interface Fixtures {
  server: Server;
  /** Problems (console errors, failed requests) seen on any page of the test. */
  problems: string[];
  /** Opens another browser context (a second person), watched like `page`. */
  newPage: () => Promise<Page>;
}

export const test = base.extend<Fixtures>({
  // eslint-disable-next-line no-empty-pattern
  server: async ({}, use) => {
    const { server, stop } = await startServer();
    await use(server);
    await stop();
  },
  problems: async ({}, use) => {
    const problems: string[] = [];
    await use(problems);
    expect(problems, "console errors and failed requests").toEqual([]);
  },
  // The browser context is set up after the server, so it is torn down
  // (its pages and their watches closed) before the server stops: a page
  // left open would otherwise see its watch cut and its reconnection
  // refused (ERR_CONNECTION_REFUSED) while the server stops.
  context: async ({ server: _server, context }, use) => {
    await use(context);
  },
  page: async ({ page, problems, server: _server }, use) => {
    watchForProblems(page, problems);
    await use(page);
  },
  newPage: async ({ browser, problems, server: _server }, use) => {
    const contexts: BrowserContext[] = [];
    await use(async () => {
      const context = await browser.newContext();
      contexts.push(context);
      const page = await context.newPage();
      watchForProblems(page, problems);
      return page;
    });
    await Promise.all(contexts.map((context) => context.close()));
  },
});

export { expect, Role };
