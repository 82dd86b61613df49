// Placeholder: built in its own branch.
export function Users() {
  return <h1>Users</h1>;
}
