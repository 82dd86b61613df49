// The user overview at 10 and at 10,000 users (issue 27: "at 10,000 users
// the user overview's first page and a search answer within the same time as
// at 10 users"). Two servers on fresh databases, seeded with `usermgmt seed`
// (which ANALYZEs the users table); one signed-in page each. Measured in the
// browser: performance.now() from the action (opening #/users; submitting a
// search) to the rows in the DOM, and the Resource Timing duration of the
// ListUsers call behind them. One warm-up round, then rounds alternating the
// two scales; the median of each.
import { test, expect, type Page } from "@playwright/test";
import { signIn, startServer, type Server } from "../e2e/fixtures";
import { seedUsers } from "../e2e/users-helpers";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SCALES = [10, 10_000] as const;

interface Sample {
  /** Action to rows in the DOM, in the browser. */
  rowsMs: number;
  /** The ListUsers request's Resource Timing duration. */
  requestMs: number;
}

interface Setup {
  users: number;
  server: Server;
  page: Page;
  /** A prefix of seeded emails ("seed-<run>-0-1": one user at 10, 1,111 at 10,000). */
  prefix: string;
  stop: () => Promise<void>;
}

test("the user overview's first page and a search, at 10 and at 10,000 users", async ({ browser }) => {
  const setups: Setup[] = [];
  try {
    for (const users of SCALES) {
      const { server, stop } = await startServer();
      // The bootstrap admin is the first user.
      await seedUsers(server, users - 1);
      await server.sql("ANALYZE");
      const context = await browser.newContext();
      const page = await context.newPage();
      await signIn(page, server, server.admin);
      const [row] = await server.sql<{ email: string }>(
        "SELECT email FROM users WHERE email LIKE 'seed-%' ORDER BY email LIMIT 1",
      );
      const prefix = (row?.email ?? "").replace(/-\d+@.*$/, "-1");
      setups.push({ users, server, page, prefix, stop });
    }
    for (const setup of setups) await expectUsers(setup);

    const samples = new Map<string, Sample[]>();
    const record = (key: string, sample: Sample) => samples.set(key, [...(samples.get(key) ?? []), sample]);
    for (let round = 0; round <= ROUNDS; round++) {
      // Alternate which scale goes first; round 0 warms up and is not counted.
      const order = round % 2 === 0 ? setups : [...setups].reverse();
      for (const setup of order) {
        const firstPage = await timeFirstPage(setup);
        const search = await timeSearch(setup);
        if (round === 0) continue;
        record(`first page @${setup.users}`, firstPage);
        record(`search @${setup.users}`, search);
      }
    }
    report(samples);
  } finally {
    for (const setup of setups) {
      await setup.page.context().close();
      await setup.stop();
    }
  }
});

async function expectUsers(setup: Setup): Promise<void> {
  const count = (await setup.server.sql<{ n: string }>("SELECT count(*) AS n FROM users"))[0]?.n;
  expect(Number(count)).toBe(setup.users);
}

async function timeFirstPage({ page, users }: Setup): Promise<Sample> {
  await page.evaluate(() => {
    window.location.hash = "#/overview";
  });
  await expect(page.getByTestId("user-count")).toHaveText(String(users));
  const sample = await page.evaluate(async () => {
    performance.clearResourceTimings();
    const started = performance.now();
    window.location.hash = "#/users";
    await new Promise<void>((resolve) => {
      const shown = () => document.querySelectorAll("tbody tr.user-row").length > 0;
      const observer = new MutationObserver(() => {
        if (!shown()) return;
        observer.disconnect();
        resolve();
      });
      observer.observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    const rowsMs = performance.now() - started;
    return { rowsMs, requestMs: listUsersDuration() };

    function listUsersDuration(): number {
      const calls = performance
        .getEntriesByType("resource")
        .filter((entry) => entry.name.endsWith("/usermgmt.v1.UserService/ListUsers"));
      return calls.at(-1)?.duration ?? Number.NaN;
    }
  });
  await expect(page.getByTestId("users-total")).toHaveText(`${users.toLocaleString("en-US")} users`);
  return sample;
}

async function timeSearch({ page, prefix }: Setup): Promise<Sample> {
  const sample = await page.evaluate(async (prefix) => {
    const input = document.querySelector<HTMLInputElement>("#users-search");
    const form = input?.form;
    if (input === null || input === undefined || form === null || form === undefined) {
      throw new Error("no search field");
    }
    performance.clearResourceTimings();
    const started = performance.now();
    input.value = prefix;
    input.dispatchEvent(new Event("input", { bubbles: true }));
    form.requestSubmit();
    await new Promise<void>((resolve) => {
      const found = () => {
        const emails = [...document.querySelectorAll("tbody tr.user-row .user-toggle")].map((e) => e.textContent ?? "");
        return emails.length > 0 && emails.every((email) => email.startsWith(prefix));
      };
      const observer = new MutationObserver(() => {
        if (!found()) return;
        observer.disconnect();
        resolve();
      });
      observer.observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    const rowsMs = performance.now() - started;
    const calls = performance
      .getEntriesByType("resource")
      .filter((entry) => entry.name.endsWith("/usermgmt.v1.UserService/ListUsers"));
    return { rowsMs, requestMs: calls.at(-1)?.duration ?? Number.NaN, calls: calls.length };
  }, prefix);
  expect(sample.calls, "one ListUsers call per search").toBe(1);
  await expect(page.getByTestId("users-total")).toHaveText("Matching users (not counted while searching)");
  // Back to the whole list for the next round.
  await page.getByRole("searchbox", { name: "Search by email" }).fill("");
  await page.getByRole("searchbox", { name: "Search by email" }).press("Enter");
  await expect(page.getByRole("table")).toContainText("Users, oldest first");
  return { rowsMs: sample.rowsMs, requestMs: sample.requestMs };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? Number.NaN) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function report(samples: Map<string, Sample[]>): void {
  const ms = (value: number) => `${value.toFixed(1)} ms`;
  const lines = [`user overview at scale: median of ${ROUNDS} interleaved rounds (after one warm-up)`];
  for (const action of ["first page", "search"]) {
    const small = samples.get(`${action} @${SCALES[0]}`) ?? [];
    const large = samples.get(`${action} @${SCALES[1]}`) ?? [];
    const rows = [median(small.map((s) => s.rowsMs)), median(large.map((s) => s.rowsMs))] as const;
    const request = [median(small.map((s) => s.requestMs)), median(large.map((s) => s.requestMs))] as const;
    lines.push(
      `${action.padEnd(10)}  rows visible: ${ms(rows[0])} @10, ${ms(rows[1])} @10,000, ratio ${(rows[1] / rows[0]).toFixed(2)}` +
        `  |  ListUsers request: ${ms(request[0])} @10, ${ms(request[1])} @10,000, ratio ${(request[1] / request[0]).toFixed(2)}`,
    );
    lines.push(
      `            samples rows @10: ${small.map((s) => s.rowsMs.toFixed(1)).join(", ")}; @10,000: ${large.map((s) => s.rowsMs.toFixed(1)).join(", ")}`,
    );
  }
  console.log(lines.join("\n"));
}
