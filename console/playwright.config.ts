// The console's browser suite: Playwright's runner driving Debian's
// Chromium (never a downloaded browser) against real `usermgmt serve`
// processes on fresh PostgreSQL databases (e2e/fixtures.ts).
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "e2e",
  fullyParallel: true,
  workers: Number(process.env.CONSOLE_TEST_WORKERS ?? 2),
  timeout: 90_000,
  expect: { timeout: 10_000 },
  forbidOnly: true,
  reporter: [["list"]],
  use: {
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      // Headless Chromium as root needs it; the pages it loads are our own.
      args: ["--no-sandbox"],
    },
    viewport: { width: 1280, height: 800 },
    trace: "retain-on-failure",
  },
});
