// Creating a personal API token: a name, an expiry within the contract's
// bounds (at most 365 days ahead) and the permissions it may use, then the
// token itself, shown this once.
import { useEffect, useRef, useState } from "preact/hooks";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { api } from "../../api";
import { describeFailure, failureOf } from "../../errors";
import { roleName } from "../../format";
import type { ApiToken } from "../../gen/usermgmt/v1/resources_pb";
import { guarded, identity } from "../../session";
import { Dialog } from "../../ui/Dialog";
import { ErrorText, notify } from "../../ui/Notice";
import { placeViolations } from "./fieldErrors";
import { inServiceOrder, type PermissionInfo } from "./permissions";

const DAY_MS = 24 * 60 * 60 * 1000;
/** The contract's longest lifetime of a token. */
const MAX_DAYS = 365;
const EXPIRY_CHOICES = ["7", "30", "90", "365", "date"] as const;
type ExpiryChoice = (typeof EXPIRY_CHOICES)[number];
const EXPIRY_LABELS: Record<ExpiryChoice, string> = {
  "7": "7 days",
  "30": "30 days",
  "90": "90 days",
  "365": "365 days",
  date: "On a date…",
};

type Field = "name" | "expiry" | "permissions";
type FieldErrors = Partial<Record<Field, string>>;
const FIELD_OF: Record<string, Field> = { name: "name", expires_at: "expiry", permissions: "permissions" };

interface CreateTokenDialogProps {
  permissionInfo: PermissionInfo;
  onCreated: (token: ApiToken) => void;
  onClose: () => void;
}

export function CreateTokenDialog({ permissionInfo, onCreated, onClose }: CreateTokenDialogProps) {
  const [secret, setSecret] = useState<{ name: string; value: string } | undefined>(undefined);
  return secret === undefined ? (
    <Dialog title="Create a personal API token" onClose={onClose}>
      <CreateTokenForm
        permissionInfo={permissionInfo}
        onCreated={(token, value) => {
          onCreated(token);
          setSecret({ name: token.name, value });
        }}
        onCancel={onClose}
      />
    </Dialog>
  ) : (
    <Dialog title={`Your new token “${secret.name}”`} onClose={onClose} describedBy="new-token-warning">
      <ShownOnce value={secret.value} onDone={onClose} />
    </Dialog>
  );
}

interface CreateTokenFormProps {
  permissionInfo: PermissionInfo;
  onCreated: (token: ApiToken, value: string) => void;
  onCancel: () => void;
}

function CreateTokenForm({ permissionInfo, onCreated, onCancel }: CreateTokenFormProps) {
  const me = identity.value;
  const [name, setName] = useState("");
  const [expiry, setExpiry] = useState<ExpiryChoice>("30");
  const [date, setDate] = useState("");
  const [chosen, setChosen] = useState<ReadonlySet<string>>(new Set());
  const [errors, setErrors] = useState<FieldErrors>({});
  const [formError, setFormError] = useState("");
  const [busy, setBusy] = useState(false);
  const held = inServiceOrder(me?.permissions ?? [], permissionInfo);
  const role = me === undefined ? "" : roleName(me.role);

  async function submit(event: Event): Promise<void> {
    event.preventDefault();
    setFormError("");
    const expiresAt = expiryOf(expiry, date);
    if (expiresAt === undefined) return setErrors({ expiry: "Choose the date the token stops working." });
    setErrors({});
    setBusy(true);
    try {
      const answer = await guarded(() =>
        api.apiTokens.createApiToken({
          name: name.trim(),
          expiresAt: timestampFromMs(expiresAt),
          permissions: held.filter((permission) => chosen.has(permission)),
        }),
      );
      if (answer.apiToken === undefined) throw new Error("CreateApiToken answered without the token's resource");
      onCreated(answer.apiToken, answer.token);
    } catch (caught) {
      const failure = failureOf(caught);
      const { fields, unplaced } = placeViolations(failure.fieldViolations, FIELD_OF);
      setErrors(fields);
      if (Object.keys(fields).length === 0 || unplaced.length > 0) setFormError(describeFailure(failure));
      setBusy(false);
    }
  }

  function toggle(permission: string, on: boolean): void {
    const next = new Set(chosen);
    if (on) next.add(permission);
    else next.delete(permission);
    setChosen(next);
  }

  return (
    <form noValidate onSubmit={(event) => void submit(event)} class="token-form">
      <label for="token-name">Name</label>
      <input
        id="token-name"
        maxLength={100}
        value={name}
        placeholder="nightly export"
        aria-invalid={errors.name !== undefined ? "true" : undefined}
        aria-describedby={errors.name !== undefined ? "token-name-error" : undefined}
        onInput={(e) => setName(e.currentTarget.value)}
      />
      <FieldError id="token-name-error" text={errors.name} />

      <label for="token-expiry">Expires after</label>
      <select
        id="token-expiry"
        value={expiry}
        aria-invalid={errors.expiry !== undefined && expiry !== "date" ? "true" : undefined}
        aria-describedby={errors.expiry !== undefined ? "token-expiry-error" : undefined}
        onChange={(e) => setExpiry(e.currentTarget.value as ExpiryChoice)}
      >
        {EXPIRY_CHOICES.map((choice) => (
          <option key={choice} value={choice}>
            {EXPIRY_LABELS[choice]}
          </option>
        ))}
      </select>
      {expiry === "date" && (
        <>
          <label for="token-date">Stops working on (00:00 UTC)</label>
          <input
            id="token-date"
            type="date"
            min={dayOf(Date.now() + DAY_MS)}
            max={dayOf(Date.now() + MAX_DAYS * DAY_MS)}
            value={date}
            aria-invalid={errors.expiry !== undefined ? "true" : undefined}
            aria-describedby={errors.expiry !== undefined ? "token-expiry-error" : undefined}
            onInput={(e) => setDate(e.currentTarget.value)}
          />
        </>
      )}
      <FieldError id="token-expiry-error" text={errors.expiry} />

      <fieldset class="permission-choice" aria-describedby="token-permissions-hint">
        <legend>Permissions</legend>
        <p id="token-permissions-hint" class="muted field-hint">
          None checked: the token may do everything your role ({role}) may.
        </p>
        <ul class="permission-checks">
          {held.map((permission) => (
            <li key={permission}>
              <input
                type="checkbox"
                id={`token-permission-${permission}`}
                checked={chosen.has(permission)}
                onChange={(e) => toggle(permission, e.currentTarget.checked)}
              />
              <label for={`token-permission-${permission}`}>
                <code>{permission}</code>
                <span class="muted">{permissionInfo.descriptions.get(permission) ?? ""}</span>
              </label>
            </li>
          ))}
        </ul>
        <FieldError id="token-permissions-error" text={errors.permissions} />
      </fieldset>

      <ErrorText text={formError} />
      <div class="dialog-actions">
        <button type="button" class="button" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="button button-primary" disabled={busy}>
          {busy ? "Creating…" : "Create token"}
        </button>
      </div>
    </form>
  );
}

function ShownOnce({ value, onDone }: { value: string; onDone: () => void }) {
  const copyButton = useRef<HTMLButtonElement>(null);
  const secret = useRef<HTMLElement>(null);
  const [copyProblem, setCopyProblem] = useState("");
  useEffect(() => copyButton.current?.focus(), []);

  async function copy(): Promise<void> {
    try {
      await navigator.clipboard.writeText(value);
      setCopyProblem("");
      notify("The token was copied.");
    } catch {
      selectText(secret.current);
      setCopyProblem("The browser did not allow copying: the token is selected, copy it with Ctrl+C (⌘C).");
    }
  }

  return (
    <>
      <div id="new-token-warning" class="warning-box">
        <p>Copy the token now: it is shown only this once, and the service keeps only its hash.</p>
        <p>Anyone holding it can act as you within its permissions. Keep it like a password.</p>
      </div>
      <p>
        <code class="secret" ref={secret} data-testid="new-api-token">
          {value}
        </code>
      </p>
      <ErrorText text={copyProblem} />
      <div class="dialog-actions">
        <button type="button" class="button" ref={copyButton} onClick={() => void copy()}>
          Copy
        </button>
        <button type="button" class="button button-primary" onClick={onDone}>
          Done
        </button>
      </div>
    </>
  );
}

function FieldError({ id, text }: { id: string; text: string | undefined }) {
  if (text === undefined) return null;
  return (
    <p id={id} class="error-text field-error" data-testid={id}>
      {text}
    </p>
  );
}

/** When the chosen expiry falls, in ms since the epoch; undefined when no date is chosen. */
function expiryOf(choice: ExpiryChoice, date: string): number | undefined {
  if (choice !== "date") return Date.now() + Number(choice) * DAY_MS;
  if (date === "") return undefined;
  const at = Date.parse(`${date}T00:00:00Z`);
  return Number.isNaN(at) ? undefined : at;
}

/** `2027-01-31`, the UTC day of `ms`. */
function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function selectText(element: HTMLElement | null): void {
  if (element === null) return;
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection?.removeAllRanges();
  selection?.addRange(range);
}
