import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { users } from "../api/client";
import type { User } from "../api/types";
import { RequireSignIn } from "../components/RequireSignIn";
import { Notice, PageTitle, ProblemMessage } from "../components/ui";
import { useSession } from "../state";

export default function Account() {
  return (
    <RequireSignIn title="Your account">
      <AccountPages />
    </RequireSignIn>
  );
}

function AccountPages() {
  const { state } = useSession();
  if (state.status !== "signed-in") return null;
  return (
    <div className="narrow">
      <PageTitle>Your account</PageTitle>
      <Profile user={state.user} />
      <EmailStatus user={state.user} />
      <PasswordChange />
      <p>
        <Link to="/orders">Your orders</Link>
      </p>
    </div>
  );
}

function Profile({ user }: { user: User }) {
  const { session } = useSession();
  const [form, setForm] = useState({
    firstName: user.firstName,
    lastName: user.lastName,
    phoneNumber: user.phoneNumber ?? "",
  });
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      await users.updateProfile(user.id, { ...form, phoneNumber: form.phoneNumber || null });
      await session.loadUser();
      setSaved(true);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="profile-heading">
      <h2 id="profile-heading">Profile</h2>
      <form onSubmit={submit} className="stack">
        <div className="field">
          <label htmlFor="profile-first">First name</label>
          <input id="profile-first" required autoComplete="given-name" value={form.firstName}
            onChange={(e) => setForm({ ...form, firstName: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="profile-last">Last name</label>
          <input id="profile-last" required autoComplete="family-name" value={form.lastName}
            onChange={(e) => setForm({ ...form, lastName: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="profile-phone">Phone (optional)</label>
          <input id="profile-phone" type="tel" autoComplete="tel" value={form.phoneNumber}
            onChange={(e) => setForm({ ...form, phoneNumber: e.target.value })} />
        </div>
        <ProblemMessage error={error} title="The profile was not saved" />
        {saved && <Notice>Profile saved.</Notice>}
        <button type="submit" className="primary" disabled={busy}>Save profile</button>
      </form>
    </section>
  );
}

function EmailStatus({ user }: { user: User }) {
  const [sent, setSent] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const resend = async () => {
    setError(null);
    try {
      await users.resendVerification();
      setSent(true);
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <section aria-labelledby="email-heading">
      <h2 id="email-heading">Email</h2>
      <p>
        {user.email} —{" "}
        {user.emailVerified ? <strong>confirmed</strong> : <strong>not confirmed yet</strong>}
      </p>
      {!user.emailVerified && (
        <button type="button" onClick={() => void resend()} disabled={sent}>
          Send the confirmation link again
        </button>
      )}
      {sent && <Notice>A new link is on its way to {user.email}.</Notice>}
      <ProblemMessage error={error} />
    </section>
  );
}

function PasswordChange() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setDone(false);
    try {
      await users.changePassword(current, next);
      setDone(true);
      setCurrent("");
      setNext("");
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <section aria-labelledby="password-heading">
      <h2 id="password-heading">Password</h2>
      <form onSubmit={submit} className="stack">
        <div className="field">
          <label htmlFor="pw-current">Current password</label>
          <input id="pw-current" type="password" required autoComplete="current-password"
            value={current} onChange={(e) => setCurrent(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor="pw-new">New password (at least 8 characters)</label>
          <input id="pw-new" type="password" required minLength={8} autoComplete="new-password"
            value={next} onChange={(e) => setNext(e.target.value)} />
        </div>
        <ProblemMessage error={error} title="The password was not changed" />
        {done && <Notice>Password changed.</Notice>}
        <button type="submit">Change password</button>
      </form>
      <p className="small">
        Forgot it? <Link to="/account/reset-password">Get a reset link by mail</Link>.
      </p>
    </section>
  );
}
