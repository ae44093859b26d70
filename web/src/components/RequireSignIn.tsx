import type { ReactNode } from "react";
import { useLocation } from "react-router";
import { useSession } from "../state";
import { Loading, PageTitle } from "./ui";

export function RequireSignIn({ children, title }: { children: ReactNode; title: string }) {
  const { session, state } = useSession();
  const location = useLocation();
  if (state.status === "loading") return <Loading label="Checking your sign-in" />;
  if (state.status === "anonymous") {
    return (
      <div className="narrow">
        <PageTitle>{title}</PageTitle>
        <p>Please sign in to see this page.</p>
        <button
          type="button"
          className="primary"
          onClick={() => void session.startSignIn(location.pathname + location.search)}
        >
          Sign in
        </button>
      </div>
    );
  }
  return <>{children}</>;
}
