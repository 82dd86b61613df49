// One's own account, for every member: who one is and what one's role may
// do, one's sessions, one's password and one's personal API tokens.
import { roleClass, roleName, utc } from "../format";
import { identity } from "../session";
import { ApiTokens } from "./account/ApiTokens";
import { PasswordForm } from "./account/PasswordForm";
import { inServiceOrder, usePermissionInfo, type PermissionInfo } from "./account/permissions";
import { Sessions } from "./account/Sessions";

export function Account() {
  const permissionInfo = usePermissionInfo();
  return (
    <section aria-labelledby="account-title" class="account">
      <h1 id="account-title">My account</h1>
      <div class="account-top">
        <Profile permissionInfo={permissionInfo} />
        <PasswordForm />
      </div>
      <Sessions />
      <ApiTokens permissionInfo={permissionInfo} />
    </section>
  );
}

function Profile({ permissionInfo }: { permissionInfo: PermissionInfo }) {
  const me = identity.value;
  if (me === undefined) return null;
  const held = inServiceOrder(me.permissions, permissionInfo);
  return (
    <section class="card account-section" aria-labelledby="profile-title">
      <h2 id="profile-title">Profile</h2>
      <dl class="profile">
        <dt>Email</dt>
        <dd data-testid="profile-email">{me.user.email}</dd>
        <dt>Role</dt>
        <dd>
          <span class={roleClass(me.role)} data-testid="profile-role">
            {roleName(me.role)}
          </span>
        </dd>
        <dt>Token key</dt>
        <dd>
          <code data-testid="profile-fingerprint">{me.user.tokenKeyFingerprint}</code>
        </dd>
        <dt>Last sign-in</dt>
        <dd data-testid="profile-last-login">{utc(me.user.lastLoginAt)}</dd>
      </dl>
      <details class="role-permissions">
        <summary>
          What {roleName(me.role)} may do ({held.length} permissions)
        </summary>
        <ul data-testid="profile-permissions">
          {held.map((permission) => (
            <li key={permission}>
              <code>{permission}</code>
              {permissionInfo.descriptions.has(permission) && (
                <span class="muted"> — {permissionInfo.descriptions.get(permission)}</span>
              )}
            </li>
          ))}
        </ul>
      </details>
    </section>
  );
}
