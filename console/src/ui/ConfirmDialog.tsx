// The one-step confirmation of ending something (a token, a session, an
// invite): the action runs only on its button; a NOT_FOUND answer means it
// had already ended elsewhere, which is what the person wanted.
import type { ComponentChildren } from "preact";
import { useRef, useState } from "preact/hooks";
import { Code } from "@connectrpc/connect";
import { Dialog } from "./Dialog";
import { ErrorText } from "./Notice";
import { describeFailure, failureOf } from "../errors";
import { guarded } from "../session";

interface ConfirmDialogProps {
  title: string;
  /** What the action does, read out as the dialog's description. */
  children: ComponentChildren;
  actionLabel: string;
  busyLabel: string;
  action: () => Promise<unknown>;
  /** After the action, or when it had already happened (`alreadyOver`). */
  onDone: (alreadyOver: boolean) => void;
  onClose: () => void;
}

export function ConfirmDialog({ title, children, actionLabel, busyLabel, action, onDone, onClose }: ConfirmDialogProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const textId = useRef(`confirm-${Math.random().toString(36).slice(2)}`).current;

  async function run(): Promise<void> {
    setBusy(true);
    setError("");
    try {
      await guarded(action);
    } catch (caught) {
      const failure = failureOf(caught);
      if (failure.code === Code.NotFound) return onDone(true);
      setBusy(false);
      return setError(describeFailure(failure));
    }
    onDone(false);
  }

  return (
    <Dialog title={title} onClose={onClose} describedBy={textId}>
      <div id={textId}>{children}</div>
      <ErrorText text={error} />
      <div class="dialog-actions">
        <button type="button" class="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" class="button button-danger" disabled={busy} onClick={() => void run()}>
          {busy ? busyLabel : actionLabel}
        </button>
      </div>
    </Dialog>
  );
}
