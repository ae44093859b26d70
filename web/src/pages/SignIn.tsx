import { useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { ApiError, users } from "../api/client";
import { Loading, Notice, PageTitle, ProblemMessage } from "../components/ui";
import { useSession } from "../state";

/** /signin starts the OAuth flow at once; the platform's own page asks for the password. */
export function SignIn() {
  const { session } = useSession();
  const [params] = useSearchParams();
  useEffect(() => {
    void session.startSignIn(params.get("next") ?? "/");
  }, [session, params]);
  return <Loading label="Taking you to sign in" />;
}

export function AuthCallback() {
  const { session } = useSession();
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [error, setError] = useState<unknown>(null);
  const started = useRef(false);

  useEffect(() => {
    // A code is good once: StrictMode's second effect run must not spend it again.
    if (started.current) return;
    started.current = true;
    const code = params.get("code");
    const state = params.get("state") ?? "";
    if (!code) {
      setError(
        new ApiError({
          type: "about:blank",
          status: 400,
          title: "Sign-in did not finish",
          detail: params.get("error_description") ?? "The sign-in page sent no code back.",
        }),
      );
      return;
    }
    session.completeSignIn(code, state).then(
      (next) => navigate(next, { replace: true }),
      (failure: unknown) => setError(failure),
    );
  }, [session, params, navigate]);

  if (!error) return <Loading label="Signing you in" />;
  return (
    <div className="narrow">
      <PageTitle>Sign-in failed</PageTitle>
      <ProblemMessage error={error} />
      <button type="button" className="primary" onClick={() => void session.startSignIn("/")}>
        Try again
      </button>
    </div>
  );
}

export function SignUp() {
  const { session } = useSession();
  const [form, setForm] = useState({ email: "", password: "", firstName: "", lastName: "" });
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await users.register(form);
      setDone(true);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  if (done) {
    return (
      <div className="narrow">
        <PageTitle>Check your mail</PageTitle>
        <Notice>
          We sent a link to <strong>{form.email}</strong> to confirm the address. You can sign in
          already.
        </Notice>
        <button type="button" className="primary" onClick={() => void session.startSignIn("/")}>
          Sign in
        </button>
      </div>
    );
  }
  const field = (name: keyof typeof form, label: string, type = "text", autoComplete = "") => (
    <div className="field">
      <label htmlFor={`signup-${name}`}>{label}</label>
      <input
        id={`signup-${name}`}
        type={type}
        required
        autoComplete={autoComplete || undefined}
        minLength={name === "password" ? 8 : undefined}
        value={form[name]}
        onChange={(e) => setForm({ ...form, [name]: e.target.value })}
      />
    </div>
  );
  return (
    <div className="narrow">
      <PageTitle>Create an account</PageTitle>
      <form onSubmit={submit} className="stack">
        {field("firstName", "First name", "text", "given-name")}
        {field("lastName", "Last name", "text", "family-name")}
        {field("email", "Email", "email", "email")}
        {field("password", "Password (at least 8 characters)", "password", "new-password")}
        <ProblemMessage error={error} title="Could not create the account" />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Creating…" : "Create account"}
        </button>
      </form>
      <p>
        Already have one?{" "}
        <button type="button" className="link" onClick={() => void session.startSignIn("/")}>
          Sign in
        </button>
        . Forgot your password? <Link to="/account/reset-password">Reset it</Link>.
      </p>
    </div>
  );
}
