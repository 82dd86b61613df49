// Placeholder: built in its own branch.
export function Audit() {
  return <h1>Audit</h1>;
}
