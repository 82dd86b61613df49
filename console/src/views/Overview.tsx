// The organisation overview: its name, how many users hold each role, its
// secure-playback state and its API key (only the fingerprint; rotation is
// double-confirmed and shows the new key once).
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { describeFailure, failureOf } from "../errors";
import { roleClass, roleName, utc } from "../format";
import { onFeed } from "../live";
import type { Organisation } from "../gen/usermgmt/v1/resources_pb";
import { can, guarded, identity } from "../session";
import { DoubleConfirm } from "../ui/DoubleConfirm";
import { Dialog } from "../ui/Dialog";
import { ErrorText } from "../ui/Notice";

export function Overview() {
  const [organisation, setOrganisation] = useState<Organisation | undefined>(identity.value?.organisation);
  const [error, setError] = useState("");
  const [rotating, setRotating] = useState(false);
  const [newKey, setNewKey] = useState("");

  async function load(): Promise<void> {
    try {
      // GetOrganisation needs users.read; WhoAmI shows every member what
      // the organisation is.
      const org = can("users.read")
        ? (await guarded(() => api.organisation.getOrganisation({}))).organisation
        : identity.value?.organisation;
      setOrganisation(org);
      setError("");
    } catch (caught) {
      setError(describeFailure(failureOf(caught)));
    }
  }

  useEffect(() => {
    void load();
    return onFeed((event) => {
      if (event.kind === "reset") return void load();
      const org = event.change.targets.find((t) => t.targetType === "organisation");
      if (org?.state.case === "organisation") setOrganisation(org.state.value);
      else if (org !== undefined) void load();
    });
  }, []);

  if (organisation === undefined) return <ErrorText text={error} />;
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">{organisation.name}</h1>
      <ErrorText text={error} />
      <div class="cards">
        <div class="card">
          <h2>Users</h2>
          <p class="big-number" data-testid="user-count">
            {organisation.userCount}
          </p>
          <ul class="role-counts" aria-label="Users per role">
            {organisation.roleCounts.map((count) => (
              <li key={count.role} data-testid={`role-count-${roleName(count.role)}`}>
                <span class={roleClass(count.role)}>{roleName(count.role)}</span>
                <span class="count">{count.count}</span>
              </li>
            ))}
          </ul>
        </div>
        <div class="card">
          <h2>Secure playback</h2>
          <p data-testid="secure-playback">
            {organisation.securePlayback
              ? "On: every playback of this organisation's streams needs a valid playback token."
              : "Off: playback needs no token."}
          </p>
        </div>
        <div class="card">
          <h2>API key</h2>
          {organisation.apiKeyFingerprint !== "" ? (
            <>
              <p>
                Fingerprint <code data-testid="api-key-fingerprint">{organisation.apiKeyFingerprint}</code>
              </p>
              <p class="muted">Rotated {utc(organisation.apiKeyRotatedAt)}</p>
            </>
          ) : (
            <p class="muted">Only members who may read the user list see the key's fingerprint.</p>
          )}
          {can("apikey.rotate") && (
            <button type="button" class="button button-danger" onClick={() => setRotating(true)}>
              Rotate API key
            </button>
          )}
        </div>
      </div>
      {rotating && (
        <DoubleConfirm
          title="Rotate the organisation API key"
          intro="A new API key replaces the current one. Continue to see what this changes."
          actionLabel="Rotate API key"
          step={async (confirmationToken) => {
            const answer = await api.organisation.rotateApiKey({ confirmationToken });
            if (answer.outcome.case === "confirmationRequired") {
              const c = answer.outcome.value;
              return { consequences: { token: c.confirmationToken, warning: c.warning, facts: [] } };
            }
            return { done: answer.outcome.value };
          }}
          onDone={(rotated) => {
            setRotating(false);
            setNewKey(rotated?.apiKey ?? "");
            void load();
          }}
          onClose={() => setRotating(false)}
        />
      )}
      {newKey !== "" && (
        <Dialog title="The new API key" onClose={() => setNewKey("")}>
          <p>Store it now: it is shown only this once. The old key no longer works.</p>
          <p>
            <code class="secret" data-testid="new-api-key">
              {newKey}
            </code>
          </p>
          <div class="dialog-actions">
            <button type="button" class="button" onClick={() => void navigator.clipboard.writeText(newKey)}>
              Copy
            </button>
            <button type="button" class="button button-primary" onClick={() => setNewKey("")}>
              Done
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}
