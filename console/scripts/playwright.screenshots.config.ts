// `npm run screenshots`: the documentation's pictures (docs/console/*.png),
// taken by Playwright like a spec, against a real server with seeded users.
import { defineConfig } from "@playwright/test";
import suite from "../playwright.config";

export default defineConfig({
  ...suite,
  testDir: ".",
  testMatch: "screenshots.ts",
  workers: 1,
  fullyParallel: false,
  use: {
    ...suite.use,
    viewport: { width: 1100, height: 700 },
    deviceScaleFactor: 1,
    trace: "off",
  },
});
