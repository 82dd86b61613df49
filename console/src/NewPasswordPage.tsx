// The page of a mailed link that sets a password (accepting an invite,
// resetting a password): the new password twice, checked here to match
// before anything is sent, the service's own objections beside the field,
// and a plain sentence when the link's token no longer works.
import type { ComponentChildren } from "preact";
import { useRef, useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { describeFailure, failureOf, type CallFailure } from "./errors";

export interface NewPasswordPageProps {
  title: string;
  intro: ComponentChildren;
  submitLabel: string;
  busyLabel: string;
  /** The link's token; empty when the link came without one. */
  token: string;
  /** The request's field that carries the password ("password", "new_password"). */
  passwordField: string;
  /** The request's field that carries the token ("invite_token", "reset_token"). */
  tokenField: string;
  /** The ErrorInfo reason the service gives for a token that does not work. */
  invalidReason: string;
  /** What to tell the person when the token does not work. */
  invalidSentence: string;
  /** Sends the password; throws the call's error. */
  submit: (password: string) => Promise<void>;
}

const INCOMPLETE_LINK = "This link is incomplete: open it exactly as you received it, or ask for a new one.";

export function NewPasswordPage(props: NewPasswordPageProps) {
  const [password, setPassword] = useState("");
  const [repeated, setRepeated] = useState("");
  const [passwordError, setPasswordError] = useState("");
  const [repeatError, setRepeatError] = useState("");
  const [error, setError] = useState("");
  const [invalid, setInvalid] = useState(props.token === "" ? INCOMPLETE_LINK : "");
  const [busy, setBusy] = useState(false);
  const passwordInput = useRef<HTMLInputElement>(null);
  const repeatInput = useRef<HTMLInputElement>(null);

  async function send(event: Event): Promise<void> {
    event.preventDefault();
    setPasswordError("");
    setRepeatError("");
    setError("");
    if (password !== repeated) {
      setRepeatError("The two passwords differ: type the same password twice.");
      repeatInput.current?.focus();
      return;
    }
    setBusy(true);
    try {
      await props.submit(password);
    } catch (caught) {
      showFailure(failureOf(caught));
    } finally {
      setBusy(false);
    }
  }

  function showFailure(failure: CallFailure): void {
    const tokenRefused =
      failure.reason === props.invalidReason || failure.fieldViolations.some((v) => v.field === props.tokenField);
    if (tokenRefused) return setInvalid(props.invalidSentence);
    const onPassword = failure.fieldViolations.filter((v) => v.field === props.passwordField);
    if (failure.code === Code.InvalidArgument && onPassword.length > 0) {
      setPasswordError(`The password ${onPassword.map((v) => v.description).join(" and ")}.`);
      passwordInput.current?.focus();
      return;
    }
    setError(describeFailure(failure));
  }

  return (
    <main class="sign-in" id="main">
      <div class="card sign-in-card">
        <p class="brand">nanoStream Cloud</p>
        <h1 id="new-password-title">{props.title}</h1>
        {invalid !== "" ? (
          <>
            <p class="error-text" role="alert" data-testid="link-invalid">
              {invalid}
            </p>
            <p>
              <a href="/">Go to the sign-in page</a>
            </p>
          </>
        ) : (
          <form onSubmit={(event) => void send(event)} aria-labelledby="new-password-title" noValidate>
            <div class="muted">{props.intro}</div>
            <label for="new-password">New password</label>
            <input
              id="new-password"
              ref={passwordInput}
              type="password"
              autocomplete="new-password"
              required
              aria-invalid={passwordError !== "" ? "true" : undefined}
              aria-describedby={passwordError !== "" ? "new-password-hint new-password-error" : "new-password-hint"}
              value={password}
              onInput={(e) => setPassword(e.currentTarget.value)}
            />
            <p id="new-password-hint" class="field-hint">
              At least 8 characters.
            </p>
            {passwordError !== "" && (
              <p id="new-password-error" class="error-text" role="alert">
                {passwordError}
              </p>
            )}
            <label for="repeat-password">Repeat the password</label>
            <input
              id="repeat-password"
              ref={repeatInput}
              type="password"
              autocomplete="new-password"
              required
              aria-invalid={repeatError !== "" ? "true" : undefined}
              aria-describedby={repeatError !== "" ? "repeat-password-error" : undefined}
              value={repeated}
              onInput={(e) => setRepeated(e.currentTarget.value)}
            />
            {repeatError !== "" && (
              <p id="repeat-password-error" class="error-text" role="alert">
                {repeatError}
              </p>
            )}
            {error !== "" && (
              <p class="error-text" role="alert">
                {error}
              </p>
            )}
            <button type="submit" class="button button-primary" disabled={busy}>
              {busy ? props.busyLabel : props.submitLabel}
            </button>
          </form>
        )}
      </div>
    </main>
  );
}
