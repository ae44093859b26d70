import { useEffect, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { users } from "../api/client";
import { Loading, Notice, PageTitle, ProblemMessage } from "../components/ui";
import { useSession } from "../state";

export default function VerifyEmail() {
  const [params] = useSearchParams();
  const { session, state } = useSession();
  const token = params.get("token") ?? "";
  const [result, setResult] = useState<"pending" | "done">("pending");
  const [error, setError] = useState<unknown>(null);
  const sent = useRef(false);

  useEffect(() => {
    if (sent.current) return;
    sent.current = true;
    users.verifyEmail(token).then(
      () => {
        setResult("done");
        if (state.status === "signed-in") void session.loadUser();
      },
      (failure: unknown) => setError(failure),
    );
  }, [token]); // eslint-disable-line react-hooks/exhaustive-deps

  return (
    <div className="narrow">
      <PageTitle>Confirm your email</PageTitle>
      {result === "pending" && !error && <Loading label="Confirming" />}
      {result === "done" && <Notice>Your email address is confirmed. Thank you!</Notice>}
      <ProblemMessage error={error} title="The address was not confirmed" />
      <p>
        <Link to="/products">Go to the shop</Link>
      </p>
    </div>
  );
}
