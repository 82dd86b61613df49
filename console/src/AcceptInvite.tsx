// The page an invite link opens (/accept-invite#token=…): the invitee
// chooses a password, joins the organisation with the invite's role and is
// signed in at once.
import { api } from "./api";
import { NewPasswordPage } from "./NewPasswordPage";
import { adoptGrant, identity } from "./session";
import { notify } from "./ui/Notice";

export const INVITE_INVALID_SENTENCE =
  "This invite link no longer works: it was already used, revoked, or it expired. Ask the person who invited you for a new invite.";

export function AcceptInvite({ token, onJoined }: { token: string; onJoined: () => void }) {
  async function join(password: string): Promise<void> {
    const grant = await api.auth.acceptInvite({ inviteToken: token, password });
    await adoptGrant(grant);
    onJoined();
    const organisation = identity.value?.organisation?.name;
    notify(organisation === undefined ? "Welcome! You joined the organisation." : `Welcome! You joined ${organisation}.`);
  }

  return (
    <NewPasswordPage
      title="Join your organisation"
      intro={<p>You were invited to nanoStream Cloud. Choose a password for your account: you are signed in right after.</p>}
      submitLabel="Set password and join"
      busyLabel="Joining…"
      token={token}
      passwordField="password"
      tokenField="invite_token"
      invalidReason="INVITE_INVALID"
      invalidSentence={INVITE_INVALID_SENTENCE}
      submit={join}
    />
  );
}
