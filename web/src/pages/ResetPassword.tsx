import { useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";
import { users } from "../api/client";
import { Notice, PageTitle, ProblemMessage } from "../components/ui";
import { useSession } from "../state";

export default function ResetPassword() {
  const [params] = useSearchParams();
  const token = params.get("token");
  return token ? <ChooseNewPassword token={token} /> : <AskForLink />;
}

function AskForLink() {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      await users.requestPasswordReset(email);
      setSent(true);
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <div className="narrow">
      <PageTitle>Reset your password</PageTitle>
      {sent ? (
        <Notice>If an account uses {email}, a reset link is on its way there.</Notice>
      ) : (
        <form onSubmit={submit} className="stack">
          <div className="field">
            <label htmlFor="reset-email">Email</label>
            <input id="reset-email" type="email" required autoComplete="email" value={email}
              onChange={(e) => setEmail(e.target.value)} />
          </div>
          <ProblemMessage error={error} />
          <button type="submit" className="primary">Send reset link</button>
        </form>
      )}
    </div>
  );
}

function ChooseNewPassword({ token }: { token: string }) {
  const { session } = useSession();
  const [password, setPassword] = useState("");
  const [done, setDone] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      await users.confirmPasswordReset(token, password);
      setDone(true);
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <div className="narrow">
      <PageTitle>Choose a new password</PageTitle>
      {done ? (
        <>
          <Notice>Your password is changed.</Notice>
          <button type="button" className="primary" onClick={() => void session.startSignIn("/")}>
            Sign in
          </button>
        </>
      ) : (
        <form onSubmit={submit} className="stack">
          <div className="field">
            <label htmlFor="reset-password">New password (at least 8 characters)</label>
            <input id="reset-password" type="password" required minLength={8} autoComplete="new-password"
              value={password} onChange={(e) => setPassword(e.target.value)} />
          </div>
          <ProblemMessage error={error} title="The password was not changed" />
          <button type="submit" className="primary">Set password</button>
        </form>
      )}
    </div>
  );
}
