// Placeholder: built in its own branch. The actions of one expanded user.
import type { User } from "../gen/usermgmt/v1/resources_pb";

export interface UserActionsProps {
  user: User;
  /** The user after a change made here (or reloaded after a stale etag). */
  onChanged: (user: User) => void;
  /** The user was deleted. */
  onDeleted: (userId: string) => void;
}

export function UserActions(_props: UserActionsProps) {
  return null;
}
