// Placeholder: built in its own branch.
export function Invites() {
  return <h1>Invites</h1>;
}
