// Messages about what just happened, read out by screen readers.
import { signal } from "@preact/signals";

interface Message {
  id: number;
  text: string;
  tone: "info" | "error";
}

const messages = signal<Message[]>([]);
let next = 1;

/** Shows `text` for a few seconds. */
export function notify(text: string, tone: Message["tone"] = "info"): void {
  const message = { id: next++, text, tone };
  messages.value = [...messages.value, message];
  setTimeout(() => {
    messages.value = messages.value.filter((m) => m.id !== message.id);
  }, 6_000);
}

export function Notices() {
  return (
    <div class="notices" role="status" aria-live="polite">
      {messages.value.map((m) => (
        <p key={m.id} class={`notice notice-${m.tone}`}>
          {m.text}
        </p>
      ))}
    </div>
  );
}

/** An error beside the form or action it belongs to. */
export function ErrorText({ text }: { text: string }) {
  if (text === "") return null;
  return (
    <p class="error-text" role="alert">
      {text}
    </p>
  );
}
