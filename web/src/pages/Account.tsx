import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { ApiError, notifications, users } from "../api/client";
import type { NotificationPreferences, User } from "../api/types";
import { useAsync } from "../components/useAsync";
import { RequireSignIn } from "../components/RequireSignIn";
import { Loading, Notice, PageTitle, ProblemMessage } from "../components/ui";
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
      <Preferences user={state.user} />
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

type Choice = "marketingEmail" | "sms" | "push";
const CHOICES: Array<{ name: Choice; label: string }> = [
  { name: "marketingEmail", label: "News and offers by email" },
  { name: "sms", label: "Order updates by text message" },
  { name: "push", label: "Order updates as push notifications" },
];

function Preferences({ user }: { user: User }) {
  const loaded = useAsync(() => notifications.preferences(user.id), [user.id]);
  const [saved, setSaved] = useState<NotificationPreferences | null>(null);
  const [error, setError] = useState<unknown>(null);
  const current = saved ?? loaded.data;

  // The box follows the click at once; a refusal puts it back and says why.
  const change = async (name: Choice, value: boolean) => {
    if (!current) return;
    const before = current;
    setError(null);
    setSaved({ ...current, [name]: value });
    try {
      setSaved(await notifications.setPreferences(user.id, { [name]: value }));
    } catch (failure) {
      setSaved(before);
      setError(failure);
    }
  };
  // A brand-new account may not be known to the notifications service yet.
  const unknown = loaded.error instanceof ApiError && loaded.error.status === 404;
  return (
    <section aria-labelledby="prefs-heading">
      <h2 id="prefs-heading">Notifications</h2>
      <p className="small muted">Mail about your orders and your account always comes.</p>
      {loaded.loading && <Loading label="Loading your choices" />}
      {unknown && <p className="muted">Your notification choices are not available yet; try again later.</p>}
      {!unknown && <ProblemMessage error={loaded.error} />}
      {current && (
        <fieldset>
          <legend className="visually-hidden">What we may send you</legend>
          {CHOICES.map((choice) => (
            <div className="field checkbox" key={choice.name}>
              <input
                id={`pref-${choice.name}`}
                type="checkbox"
                checked={current[choice.name]}
                disabled={choice.name === "sms" && !current.phoneNumber}
                onChange={(e) => void change(choice.name, e.target.checked)}
              />
              <label htmlFor={`pref-${choice.name}`}>
                {choice.label}
                {choice.name === "sms" && !current.phoneNumber && " (add a phone number first)"}
              </label>
            </div>
          ))}
        </fieldset>
      )}
      <ProblemMessage error={error} title="Your choice was not saved" />
    </section>
  );
}
