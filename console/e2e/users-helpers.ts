// Helpers of the user overview's specs (and its benchmark): many users at
// once through `usermgmt seed`, the whole filtered list through ListUsers,
// and the CSV the export must equal, built here from the API's answer.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { expect, type Page } from "@playwright/test";
import type { Api, Server } from "./fixtures";
import { Role, UserState, type User } from "../src/gen/usermgmt/v1/resources_pb";

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, "../..");
const binary =
  process.env.USERMGMT_BINARY ??
  path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, "target"), "debug/usermgmt");

/**
 * Adds `count` active users to the server's organisation in bulk (emails
 * `seed-…@seed.example.com`, roles cycling nanoUser, nanoReadOnly,
 * nanoAdmin); the command ANALYZEs the users table after loading.
 */
export async function seedUsers(server: Server, count: number): Promise<void> {
  await run(binary, ["seed", "--organisation-id", server.organisationId, "--users", String(count)], {
    env: { ...process.env, DATABASE_URL: server.databaseUrl },
  });
}

export interface UserFilter {
  role?: Role;
  state?: UserState;
  emailPrefix?: string;
}

/** One page of ListUsers as the contract answers it. */
export async function listPage(api: Api, filter: UserFilter, pageSize: number, pageToken = "") {
  return await api.users.listUsers({ ...filter, pageSize, pageToken });
}

/** Every user matching `filter`, over all pages of ListUsers. */
export async function listAll(api: Api, filter: UserFilter = {}): Promise<User[]> {
  const users: User[] = [];
  let pageToken = "";
  do {
    const answer = await api.users.listUsers({ ...filter, pageSize: 1000, pageToken });
    users.push(...answer.users);
    pageToken = answer.nextPageToken;
  } while (pageToken !== "");
  return users;
}

const ROLE_NAMES: Record<Role, string> = {
  [Role.UNSPECIFIED]: "—",
  [Role.NANO_ADMIN]: "nanoAdmin",
  [Role.NANO_USER]: "nanoUser",
  [Role.NANO_READ_ONLY]: "nanoReadOnly",
};

const STATE_NAMES: Record<UserState, string> = {
  [UserState.UNSPECIFIED]: "—",
  [UserState.ACTIVE]: "active",
  [UserState.SUSPENDED]: "suspended",
};

function iso(at: Timestamp | undefined): string {
  return at === undefined ? "" : timestampDate(at).toISOString();
}

/** A field as the export must write it: formulas defused, then RFC 4180 quoting. */
export function expectedCell(value: string): string {
  const first = value.charAt(0);
  const defused = ["=", "+", "-", "@", "\t", "\r"].includes(first) ? `'${value}` : value;
  const needsQuotes = defused.includes(",") || defused.includes('"') || defused.includes("\n") || defused.includes("\r");
  return needsQuotes ? `"${defused.split('"').join('""')}"` : defused;
}

/** The CSV the export of `users` must be, byte for byte. */
export function expectedCsv(users: readonly User[]): string {
  const lines = [["Email", "Role", "State", "Token key fingerprint", "Created (UTC)", "Last sign-in (UTC)"]];
  for (const user of users) {
    lines.push([
      user.email,
      ROLE_NAMES[user.role],
      STATE_NAMES[user.state],
      user.tokenKeyFingerprint,
      iso(user.createdAt),
      iso(user.lastLoginAt),
    ]);
  }
  return lines.map((line) => line.map(expectedCell).join(",") + "\r\n").join("");
}

/** The user overview's rows: the emails in the order shown. */
export function userRows(page: Page) {
  return page.locator("tbody tr.user-row");
}

/** Waits until the table shows exactly `emails`, in that order. */
export async function expectEmails(page: Page, emails: readonly string[]): Promise<void> {
  await expect(userRows(page).locator(".user-toggle")).toHaveText(emails.map((email) => email));
}

/** Opens the user overview from the navigation. */
export async function openUsers(page: Page): Promise<void> {
  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name: "Users" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Users" })).toBeVisible();
}

/** Suspends a user through the contract's two steps. */
export async function suspendUser(api: Api, userId: string): Promise<User> {
  const first = await api.users.suspendUser({ userId });
  if (first.outcome.case !== "confirmationRequired") throw new Error("SuspendUser did not ask for confirmation");
  const second = await api.users.suspendUser({ userId, confirmationToken: first.outcome.value.confirmationToken });
  if (second.outcome.case !== "suspended") throw new Error("SuspendUser did not suspend");
  return second.outcome.value;
}

/** Deletes a user through the contract's two steps. */
export async function deleteUser(api: Api, userId: string): Promise<void> {
  const first = await api.users.deleteUser({ userId });
  if (first.outcome.case !== "confirmationRequired") throw new Error("DeleteUser did not ask for confirmation");
  const second = await api.users.deleteUser({ userId, confirmationToken: first.outcome.value.confirmationToken });
  if (second.outcome.case !== "deleted") throw new Error("DeleteUser did not delete");
}
