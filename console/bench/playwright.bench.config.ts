// The console's benchmarks: not part of the browser suite (`npm test`);
// run with `npm run bench:scale`. One worker, so that nothing else of the
// suite competes with what is measured.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: ".",
  testMatch: /.*\.bench\.ts$/,
  workers: 1,
  timeout: 600_000,
  expect: { timeout: 30_000 },
  forbidOnly: true,
  reporter: [["list"]],
  use: {
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: ["--no-sandbox"],
    },
    viewport: { width: 1280, height: 800 },
  },
});
