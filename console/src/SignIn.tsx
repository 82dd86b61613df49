// The sign-in page: email and password, and the organisation when the same
// email signs in to several.
import { useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { describeFailure, failureOf } from "./errors";
import { signIn, signInNotice } from "./session";
import { ForgotPassword } from "./ResetPassword";

export function SignIn() {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [organisationId, setOrganisationId] = useState("");
  const [askOrganisation, setAskOrganisation] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event: Event): Promise<void> {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      await signIn(email, password, organisationId.trim());
    } catch (caught) {
      const failure = failureOf(caught);
      if (failure.code === Code.FailedPrecondition && failure.reason === "ORGANISATION_REQUIRED") {
        setAskOrganisation(true);
        setError("This email belongs to several organisations: give the organisation's id.");
      } else if (failure.code === Code.Unauthenticated) {
        setError("The email or the password is wrong.");
      } else {
        setError(describeFailure(failure));
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="sign-in" id="main">
      <form class="card sign-in-card" onSubmit={(event) => void submit(event)} aria-labelledby="sign-in-title">
        <p class="brand">nanoStream Cloud</p>
        <h1 id="sign-in-title">Sign in to User Management</h1>
        {signInNotice.value !== "" && (
          <p class="notice notice-info" role="status" data-testid="sign-in-notice">
            {signInNotice.value}
          </p>
        )}
        <label for="email">Email</label>
        <input
          id="email"
          type="email"
          autocomplete="username"
          required
          value={email}
          onInput={(e) => setEmail(e.currentTarget.value)}
        />
        <label for="password">Password</label>
        <input
          id="password"
          type="password"
          autocomplete="current-password"
          required
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
        {askOrganisation && (
          <>
            <label for="organisation">Organisation id</label>
            <input
              id="organisation"
              required
              value={organisationId}
              onInput={(e) => setOrganisationId(e.currentTarget.value)}
            />
          </>
        )}
        {error !== "" && (
          <p class="error-text" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="button button-primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      <ForgotPassword email={email} />
    </main>
  );
}
