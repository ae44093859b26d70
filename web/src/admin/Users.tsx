import { useState } from "react";
import { useSearchParams } from "react-router";
import { users } from "../api/client";
import type { Role, User } from "../api/types";
import { Loading, Pager, PageTitle, ProblemMessage, formatDate } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { useSession } from "../state";

const LIMIT = 25;
const ROLES: Role[] = ["USER", "MODERATOR", "ADMIN"];

export function AdminUsers() {
  const [params, setParams] = useSearchParams();
  const offset = Math.max(0, Number(params.get("offset") ?? 0) || 0);
  const list = useAsync(() => users.list(LIMIT, offset), [offset]);
  return (
    <>
      <PageTitle>Users</PageTitle>
      {list.loading && <Loading label="Loading users" />}
      <ProblemMessage error={list.error} />
      {list.data && (
        <>
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Email</th>
                <th scope="col">Joined</th>
                <th scope="col">Roles</th>
              </tr>
            </thead>
            <tbody>
              {list.data.items.map((user) => (
                <UserRow key={user.id} user={user} />
              ))}
            </tbody>
          </table>
          <Pager offset={offset} limit={LIMIT} total={list.data.total}
            onPage={(next) => setParams({ offset: String(next) })} />
        </>
      )}
    </>
  );
}

function UserRow({ user }: { user: User }) {
  const { state } = useSession();
  const [roles, setRoles] = useState<Role[]>(user.roles);
  const [error, setError] = useState<unknown>(null);
  const [saving, setSaving] = useState(false);
  const self = state.status === "signed-in" && state.user.id === user.id;

  const toggle = async (role: Role, on: boolean) => {
    const next = on ? [...roles, role] : roles.filter((r) => r !== role);
    if (next.length === 0) return;
    const before = roles;
    setRoles(next);
    setSaving(true);
    setError(null);
    try {
      setRoles((await users.setRoles(user.id, next)).roles);
    } catch (failure) {
      setRoles(before);
      setError(failure);
    } finally {
      setSaving(false);
    }
  };
  return (
    <tr>
      <td>
        {user.firstName} {user.lastName}
      </td>
      <td>
        {user.email} {user.emailVerified ? "" : <span className="tag">unconfirmed</span>}
      </td>
      <td>{formatDate(user.createdAt)}</td>
      <td>
        <fieldset className="roles" disabled={saving}>
          <legend className="visually-hidden">Roles of {user.email}</legend>
          {ROLES.map((role) => (
            <label key={role} className="role">
              <input
                type="checkbox"
                checked={roles.includes(role)}
                // Taking ADMIN from yourself would lock you out of this page.
                disabled={(self && role === "ADMIN") || (roles.length === 1 && roles.includes(role))}
                onChange={(e) => void toggle(role, e.target.checked)}
              />
              {role}
            </label>
          ))}
        </fieldset>
        <ProblemMessage error={error} />
      </td>
    </tr>
  );
}
