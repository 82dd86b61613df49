// Changing one's password: the current one, the new one twice. The service
// keeps this session and ends every other session of the person; personal
// API tokens keep working (only a reset or a tokenKey renewal ends them).
import type { RefObject } from "preact";
import { useRef, useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { api } from "../../api";
import { describeFailure, failureOf } from "../../errors";
import { guarded } from "../../session";
import { ErrorText } from "../../ui/Notice";
import { placeViolations } from "./fieldErrors";

type Field = "current" | "next" | "repeat";
type FieldErrors = Partial<Record<Field, string>>;

/** The contract's field names, as the service names them in violations. */
const FIELD_OF: Record<string, Field> = { current_password: "current", new_password: "next" };

/** The service's words for a field, in the person's terms where they read oddly. */
const PLAIN: Record<string, string> = {
  "is not the caller's current password": "This is not your current password.",
};

export const PASSWORD_CHANGED =
  "Your password was changed. Your other sessions were signed out; this one stays signed in. Your personal API tokens keep working.";

export function PasswordForm() {
  const [values, setValues] = useState<Record<Field, string>>({ current: "", next: "", repeat: "" });
  const [errors, setErrors] = useState<FieldErrors>({});
  const [formError, setFormError] = useState("");
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);
  const inputs: Record<Field, RefObject<HTMLInputElement>> = {
    current: useRef<HTMLInputElement>(null),
    next: useRef<HTMLInputElement>(null),
    repeat: useRef<HTMLInputElement>(null),
  };

  function showErrors(found: FieldErrors): void {
    setErrors(found);
    const first = (["current", "next", "repeat"] as const).find((field) => found[field] !== undefined);
    if (first !== undefined) inputs[first].current?.focus();
  }

  async function submit(event: Event): Promise<void> {
    event.preventDefault();
    setDone(false);
    setFormError("");
    if (values.next !== values.repeat) return showErrors({ repeat: "The two new passwords differ." });
    setBusy(true);
    try {
      await guarded(() => api.auth.changePassword({ currentPassword: values.current, newPassword: values.next }));
      setValues({ current: "", next: "", repeat: "" });
      setErrors({});
      setDone(true);
    } catch (caught) {
      const failure = failureOf(caught);
      const { fields, unplaced } = placeViolations(failure.fieldViolations, FIELD_OF, PLAIN);
      showErrors(fields);
      const allPlaced =
        failure.code === Code.InvalidArgument && unplaced.length === 0 && Object.keys(fields).length > 0;
      if (!allPlaced) setFormError(describeFailure(failure));
    } finally {
      setBusy(false);
    }
  }

  const field = (name: Field, label: string, autocomplete: string, hint?: string) => (
    <PasswordField
      id={`password-${name}`}
      inputRef={inputs[name]}
      label={label}
      autocomplete={autocomplete}
      hint={hint}
      error={errors[name]}
      value={values[name]}
      onInput={(value) => setValues({ ...values, [name]: value })}
    />
  );

  return (
    <section class="card account-section" aria-labelledby="password-title">
      <h2 id="password-title">Change password</h2>
      <form noValidate onSubmit={(event) => void submit(event)}>
        {field("current", "Current password", "current-password")}
        {field("next", "New password", "new-password", "At least 8 characters.")}
        {field("repeat", "Repeat the new password", "new-password")}
        <ErrorText text={formError} />
        <p role="status" class="success-text" data-testid="password-changed">
          {done ? PASSWORD_CHANGED : ""}
        </p>
        <button type="submit" class="button button-primary" disabled={busy}>
          {busy ? "Changing…" : "Change password"}
        </button>
      </form>
    </section>
  );
}

interface PasswordFieldProps {
  id: string;
  inputRef: RefObject<HTMLInputElement>;
  label: string;
  autocomplete: string;
  hint: string | undefined;
  error: string | undefined;
  value: string;
  onInput: (value: string) => void;
}

/** A password input with its hint and, when the service refused it, the reason beside it. */
function PasswordField({ id, inputRef, label, autocomplete, hint, error, value, onInput }: PasswordFieldProps) {
  const describedBy = [hint !== undefined ? `${id}-hint` : "", error !== undefined ? `${id}-error` : ""]
    .filter((part) => part !== "")
    .join(" ");
  return (
    <div class="form-field">
      <label for={id}>{label}</label>
      <input
        id={id}
        ref={inputRef}
        type="password"
        autocomplete={autocomplete}
        value={value}
        aria-invalid={error !== undefined ? "true" : undefined}
        aria-describedby={describedBy === "" ? undefined : describedBy}
        onInput={(e) => onInput(e.currentTarget.value)}
      />
      {hint !== undefined && (
        <p id={`${id}-hint`} class="muted field-hint">
          {hint}
        </p>
      )}
      {error !== undefined && (
        <p id={`${id}-error`} class="error-text field-error" data-testid={`${id}-error`}>
          {error}
        </p>
      )}
    </div>
  );
}
