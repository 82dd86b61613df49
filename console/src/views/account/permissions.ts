// What each permission allows, in the service's words (RoleService.ListRoles),
// and the order the service lists them in.
import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { guarded } from "../../session";

export interface PermissionInfo {
  /** Permission id → what it allows; empty until ListRoles answered. */
  descriptions: ReadonlyMap<string, string>;
  /** Every permission id in the service's stable order. */
  order: readonly string[];
}

const NONE: PermissionInfo = { descriptions: new Map(), order: [] };

/** The permission matrix's words; the page works with ids alone until they arrive. */
export function usePermissionInfo(): PermissionInfo {
  const [info, setInfo] = useState<PermissionInfo>(NONE);
  useEffect(() => {
    let alive = true;
    guarded(() => api.roles.listRoles({}))
      .then((answer) => {
        if (!alive) return;
        setInfo({
          descriptions: new Map(answer.permissions.map((p) => [p.id, p.description])),
          order: answer.permissions.map((p) => p.id),
        });
      })
      .catch(() => undefined);
    return () => {
      alive = false;
    };
  }, []);
  return info;
}

/** `held` in the service's order (unknown ids last, as they came). */
export function inServiceOrder(held: Iterable<string>, info: PermissionInfo): string[] {
  const rank = new Map(info.order.map((id, index) => [id, index]));
  return [...held].sort((a, b) => (rank.get(a) ?? rank.size) - (rank.get(b) ?? rank.size));
}
