// How times, roles and states read on the page.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Role, UserState } from "./gen/usermgmt/v1/resources_pb";
import { ROLE_NAMES } from "./session";

/** `2026-12-08 14:03 UTC`, or "never" when unset. */
export function utc(timestamp: Timestamp | undefined, never = "never"): string {
  if (timestamp === undefined) return never;
  return `${timestampDate(timestamp).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function roleName(role: Role): string {
  return ROLE_NAMES[role];
}

export const ROLES: readonly Role[] = [Role.NANO_ADMIN, Role.NANO_USER, Role.NANO_READ_ONLY];

export function stateName(state: UserState): string {
  switch (state) {
    case UserState.ACTIVE:
      return "active";
    case UserState.SUSPENDED:
      return "suspended";
    default:
      return "—";
  }
}

/** The CSS class that colours a role's badge, as the product's pages do. */
export function roleClass(role: Role): string {
  switch (role) {
    case Role.NANO_ADMIN:
      return "role role-admin";
    case Role.NANO_USER:
      return "role role-user";
    default:
      return "role role-readonly";
  }
}
