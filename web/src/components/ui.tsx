import { useEffect, useRef, type ReactNode } from "react";
import { ApiError } from "../api/client";

/** A problem+json answer (or any failure) said plainly, with what to do next. */
export function ProblemMessage({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  const problem =
    error instanceof ApiError
      ? error.problem
      : { title: "Something went wrong", detail: String(error), status: 0 };
  const fieldErrors =
    error instanceof ApiError
      ? (error.problem.errors ?? [])
          .map((e) => {
            const field = e.field ?? (e.loc ? e.loc.filter((p) => p !== "body").join(".") : "");
            const message = e.message ?? e.msg ?? "";
            return field ? `${field}: ${message}` : message;
          })
          .filter(Boolean)
      : [];
  return (
    <div className="problem" role="alert">
      <strong>{title ?? problem.title}</strong>
      {title && problem.title !== title && <span> {problem.title}.</span>}
      {problem.detail && <p>{problem.detail}</p>}
      {fieldErrors.length > 0 && (
        <ul>
          {fieldErrors.map((message) => (
            <li key={message}>{message}</li>
          ))}
        </ul>
      )}
      {error instanceof ApiError && error.problem.requestId && (
        <p className="muted small">Reference: {error.problem.requestId}</p>
      )}
    </div>
  );
}

export function Loading({ label = "Loading" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      {label}…
    </div>
  );
}

export function Notice({ children }: { children: ReactNode }) {
  return (
    <div className="notice" role="status">
      {children}
    </div>
  );
}

export function formatMoney(amount: string, currency = "USD"): string {
  const value = Number(amount);
  if (!Number.isFinite(value)) return amount;
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(value);
  } catch {
    return `${amount} ${currency}`;
  }
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** Sets the document title and takes focus to the page's heading after a navigation. */
export function PageTitle({ children }: { children: string }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${children} · Panthera`;
    // After a client-side navigation, screen readers and keyboards start at the new
    // page's heading; on the first load the browser's own start is the right one.
    const index = (window.history.state as { idx?: number } | null)?.idx ?? 0;
    if (index > 0) heading.current?.focus({ preventScroll: true });
  }, [children]);
  return (
    <h1 ref={heading} tabIndex={-1}>
      {children}
    </h1>
  );
}

export function Pager({
  offset,
  limit,
  total,
  onPage,
}: {
  offset: number;
  limit: number;
  total: number;
  onPage: (offset: number) => void;
}) {
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));
  return (
    <nav className="pager" aria-label="Pages">
      <button type="button" disabled={page <= 1} onClick={() => onPage(offset - limit)}>
        ← Previous
      </button>
      <span aria-current="page">
        Page {page} of {pages}
      </span>
      <button type="button" disabled={page >= pages} onClick={() => onPage(offset + limit)}>
        Next →
      </button>
    </nav>
  );
}
