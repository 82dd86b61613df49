// Password reset: the page a reset link opens (/reset-password#token=…),
// and the sign-in page's "Forgot your password?", which asks the service to
// mail such a link. The service answers the request the same whether the
// email belongs to an account or not, and so does this page.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api";
import { describeFailure, failureOf } from "./errors";
import { NewPasswordPage } from "./NewPasswordPage";
import { signInNotice } from "./session";
import { Dialog } from "./ui/Dialog";
import { ErrorText } from "./ui/Notice";

export const RESET_TOKEN_INVALID_SENTENCE =
  "This password reset link no longer works: it was already used, or it expired (a link works for 30 minutes). Ask for a new one on the sign-in page.";
export const PASSWORD_CHANGED_NOTICE = "Your password was changed; sign in with the new one.";
export const RESET_REQUESTED_SENTENCE =
  "If an account uses this email, a link to choose a new password is on its way to it. The link works for 30 minutes.";

export function ResetPassword({ token, onChanged }: { token: string; onChanged: () => void }) {
  async function change(newPassword: string): Promise<void> {
    await api.auth.resetPassword({ resetToken: token, newPassword });
    signInNotice.value = PASSWORD_CHANGED_NOTICE;
    onChanged();
  }

  return (
    <NewPasswordPage
      title="Choose a new password"
      intro={<p>Your new password replaces the old one, and every session of your account ends.</p>}
      submitLabel="Change password"
      busyLabel="Changing…"
      token={token}
      passwordField="new_password"
      tokenField="reset_token"
      invalidReason="RESET_TOKEN_INVALID"
      invalidSentence={RESET_TOKEN_INVALID_SENTENCE}
      submit={change}
    />
  );
}

/** The sign-in page's way to ask for a reset link. */
export function ForgotPassword({ email }: { email: string }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <p class="forgot-password">
        <button type="button" class="link-button" onClick={() => setOpen(true)}>
          Forgot your password?
        </button>
      </p>
      {open && <RequestResetDialog initialEmail={email} onClose={() => setOpen(false)} />}
    </>
  );
}

function RequestResetDialog({ initialEmail, onClose }: { initialEmail: string; onClose: () => void }) {
  const [email, setEmail] = useState(initialEmail);
  const [sent, setSent] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const back = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (sent) back.current?.focus();
  }, [sent]);

  async function send(event: Event): Promise<void> {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      await api.auth.requestPasswordReset({ email: email.trim() });
      setSent(true);
    } catch (caught) {
      setError(describeFailure(failureOf(caught)));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog title="Reset your password" onClose={onClose}>
      {sent ? (
        <>
          <p role="status" data-testid="reset-requested">
            {RESET_REQUESTED_SENTENCE}
          </p>
          <div class="dialog-actions">
            <button type="button" class="button button-primary" ref={back} onClick={onClose}>
              Back to sign in
            </button>
          </div>
        </>
      ) : (
        <form onSubmit={(event) => void send(event)}>
          <p>We mail a link to choose a new password to your account's email address.</p>
          <label for="reset-email">Your account's email</label>
          <input
            id="reset-email"
            type="email"
            autocomplete="username"
            required
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
          />
          <ErrorText text={error} />
          <div class="dialog-actions">
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" class="button button-primary" disabled={busy}>
              {busy ? "Sending…" : "Send reset link"}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
