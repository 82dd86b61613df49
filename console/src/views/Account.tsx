// Placeholder: built in its own branch.
export function Account() {
  return <h1>Account</h1>;
}
