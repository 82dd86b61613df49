// One's personal API tokens: for scripts and backends, each with a name, an
// expiry and the permissions it may use (none: the whole role). Created
// here and shown once; listed without the secret; revoked after a
// confirmation.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../../api";
import { utc } from "../../format";
import type { ApiToken } from "../../gen/usermgmt/v1/resources_pb";
import { ConfirmDialog } from "../../ui/ConfirmDialog";
import { ErrorText, notify } from "../../ui/Notice";
import { CreateTokenDialog } from "./CreateTokenDialog";
import { useOwnList } from "./ownList";
import type { PermissionInfo } from "./permissions";
import { refocusIfLost } from "./Sessions";

export function ApiTokens({ permissionInfo }: { permissionInfo: PermissionInfo }) {
  const tokens = useOwnList<ApiToken>({
    targetType: "api_token",
    fetchPage: async (pageToken) => {
      const page = await api.apiTokens.listApiTokens({ pageSize: 100, pageToken });
      return { items: page.apiTokens, nextPageToken: page.nextPageToken };
    },
    stateOf: (target) => (target.state.case === "apiToken" ? target.state.value : undefined),
  });
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<ApiToken | undefined>(undefined);
  const heading = useRef<HTMLHeadingElement>(null);
  const [refocus, setRefocus] = useState(0);
  useEffect(() => refocusIfLost(heading.current), [refocus]);

  function revoked(token: ApiToken, alreadyOver: boolean): void {
    tokens.remove(token.id);
    setRevoking(undefined);
    setRefocus((n) => n + 1);
    notify(alreadyOver ? `The token “${token.name}” had already ended.` : `The token “${token.name}” was revoked.`);
  }

  return (
    <section class="card account-section" aria-labelledby="tokens-title">
      <div class="section-head">
        <h2 id="tokens-title" ref={heading} tabIndex={-1}>
          Personal API tokens
        </h2>
        <button type="button" class="button button-primary" onClick={() => setCreating(true)}>
          Create token
        </button>
      </div>
      <p class="muted">
        For your scripts and backends: a token acts as you, within the permissions you give it, until it expires or
        you revoke it. A change of your role or token key ends every token.
      </p>
      <ErrorText text={tokens.error} />
      {tokens.items === undefined ? (
        tokens.error === "" && <p class="muted">Loading tokens…</p>
      ) : tokens.items.length === 0 ? (
        <p class="account-empty">No personal API tokens.</p>
      ) : (
        <TokenTable tokens={tokens.items} onRevoke={setRevoking} />
      )}
      {creating && (
        <CreateTokenDialog
          permissionInfo={permissionInfo}
          onCreated={tokens.upsert}
          onClose={() => setCreating(false)}
        />
      )}
      {revoking !== undefined && (
        <RevokeTokenDialog token={revoking} onRevoked={revoked} onClose={() => setRevoking(undefined)} />
      )}
    </section>
  );
}

function TokenTable({ tokens, onRevoke }: { tokens: ApiToken[]; onRevoke: (token: ApiToken) => void }) {
  return (
    <div class="table-wrap">
      <table class="account-table" data-testid="api-tokens">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Permissions</th>
            <th scope="col">Created</th>
            <th scope="col">Expires</th>
            <th scope="col">Last used</th>
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {tokens.map((token) => (
            <tr key={token.id} data-testid={`api-token-${token.id}`}>
              <td class="token-name">{token.name}</td>
              <td data-testid="token-permissions">
                {token.permissions.length === 0 ? (
                  <span>Whole role</span>
                ) : (
                  <ul class="permission-chips">
                    {token.permissions.map((permission) => (
                      <li key={permission}>
                        <code>{permission}</code>
                      </li>
                    ))}
                  </ul>
                )}
              </td>
              <td class="nowrap">{utc(token.createdAt)}</td>
              <td class="nowrap">{utc(token.expiresAt)}</td>
              <td class="nowrap" data-testid="token-last-used">
                {utc(token.lastUsedAt)}
              </td>
              <td>
                <button type="button" class="button button-small" onClick={() => onRevoke(token)}>
                  Revoke<span class="visually-hidden">{` the token ${token.name}`}</span>
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface RevokeTokenDialogProps {
  token: ApiToken;
  onRevoked: (token: ApiToken, alreadyOver: boolean) => void;
  onClose: () => void;
}

function RevokeTokenDialog({ token, onRevoked, onClose }: RevokeTokenDialogProps) {
  return (
    <ConfirmDialog
      title={`Revoke the token “${token.name}”?`}
      actionLabel="Revoke token"
      busyLabel="Revoking…"
      action={() => api.apiTokens.revokeApiToken({ apiTokenId: token.id })}
      onDone={(alreadyOver) => onRevoked(token, alreadyOver)}
      onClose={onClose}
    >
      <p>
        Every script or backend using it is refused from its next call. This cannot be undone: a new token has a new
        value.
      </p>
    </ConfirmDialog>
  );
}
