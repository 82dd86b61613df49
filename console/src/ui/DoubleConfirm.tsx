// The double confirmation of a destructive action, as the service defines
// it: the first call changes nothing and answers with a warning and a
// single-use confirmation token; only the second call, carrying the token,
// acts. The person confirms twice: once to ask for the consequences, once
// after reading the service's own warning. Cancelling at either step sends
// nothing more.
import { useState } from "preact/hooks";
import { Dialog } from "./Dialog";
import { ErrorText } from "./Notice";
import { describeFailure, failureOf } from "../errors";
import { guarded } from "../session";

/** What the first step answered, in the page's terms. */
export interface Consequences {
  token: string;
  warning: string;
  /** Counts and facts to list under the warning ("2 pending invites are revoked"). */
  facts: string[];
}

/** One step: with "" the first (answers Consequences), with a token the second. */
export type Step<T> = (confirmationToken: string) => Promise<{ consequences?: Consequences; done?: T }>;

interface DoubleConfirmProps<T> {
  title: string;
  /** What the action does, shown before anything is asked of the service. */
  intro: string;
  /** The label of the final button ("Delete user"). */
  actionLabel: string;
  step: Step<T>;
  onDone: (result: T) => void;
  onClose: () => void;
}

export function DoubleConfirm<T>({ title, intro, actionLabel, step, onDone, onClose }: DoubleConfirmProps<T>) {
  const [consequences, setConsequences] = useState<Consequences | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  async function run(token: string): Promise<void> {
    setBusy(true);
    setError("");
    try {
      const answer = await guarded(() => step(token));
      if (answer.consequences !== undefined) setConsequences(answer.consequences);
      else if (answer.done !== undefined) onDone(answer.done);
    } catch (failure) {
      setError(describeFailure(failureOf(failure)));
      setConsequences(undefined);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog title={title} onClose={onClose} describedBy="double-confirm-text">
      {consequences === undefined ? (
        <>
          <p id="double-confirm-text">{intro}</p>
          <ErrorText text={error} />
          <div class="dialog-actions">
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button type="button" class="button button-danger" disabled={busy} onClick={() => void run("")}>
              Continue
            </button>
          </div>
        </>
      ) : (
        <>
          <div id="double-confirm-text" class="warning-box" role="alert">
            <p>{consequences.warning}</p>
            {consequences.facts.length > 0 && (
              <ul>
                {consequences.facts.map((fact) => (
                  <li key={fact}>{fact}</li>
                ))}
              </ul>
            )}
          </div>
          <ErrorText text={error} />
          <div class="dialog-actions">
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button
              type="button"
              class="button button-danger"
              disabled={busy}
              onClick={() => void run(consequences.token)}
            >
              {actionLabel}
            </button>
          </div>
        </>
      )}
    </Dialog>
  );
}
