import { useState } from "react";
import { useSearchParams } from "react-router";
import { notifications } from "../api/client";
import { Loading, Pager, PageTitle, ProblemMessage, formatDate } from "../components/ui";
import { useAsync } from "../components/useAsync";

const LIMIT = 50;

export function AdminDeliveries() {
  const [params, setParams] = useSearchParams();
  const offset = Math.max(0, Number(params.get("offset") ?? 0) || 0);
  const status = params.get("status") ?? "";
  const list = useAsync(
    () => notifications.deliveries(LIMIT, offset, status || undefined),
    [offset, status],
  );
  const [error, setError] = useState<unknown>(null);
  const [resent, setResent] = useState<string[]>([]);
  const resend = async (id: string) => {
    setError(null);
    try {
      await notifications.resend(id);
      setResent((ids) => [...ids, id]);
      list.reload();
    } catch (failure) {
      setError(failure);
    }
  };
  // A message resent is queued until the log is read again; then it may be resent once more.
  const refresh = () => {
    setResent([]);
    list.reload();
  };
  return (
    <>
      <PageTitle>Notification log</PageTitle>
      <div className="toolbar">
        <div className="field inline-field">
          <label htmlFor="delivery-status">Status</label>
          <select id="delivery-status" value={status}
            onChange={(e) => setParams(e.target.value ? { status: e.target.value } : {})}>
            <option value="">All</option>
            <option value="queued">queued</option>
            <option value="sent">sent</option>
            <option value="failed">failed</option>
          </select>
        </div>
        <button type="button" onClick={refresh}>Refresh</button>
      </div>
      <ProblemMessage error={error} title="The message was not sent again" />
      {list.loading && <Loading label="Loading deliveries" />}
      <ProblemMessage error={list.error} />
      {list.data && (
        <>
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Created</th>
                <th scope="col">Recipient</th>
                <th scope="col">Subject</th>
                <th scope="col">Template</th>
                <th scope="col">Status</th>
                <th scope="col">Attempts</th>
                <th scope="col"><span className="visually-hidden">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {list.data.items.map((delivery) => (
                <tr key={delivery.id}>
                  <td>{formatDate(delivery.createdAt)}</td>
                  <td>{delivery.recipient}</td>
                  <td>{delivery.subject}</td>
                  <td>{delivery.template}</td>
                  <td>
                    <span className={`status status-${delivery.status.toLowerCase()}`}>{delivery.status}</span>
                    {delivery.lastError && <div className="muted small">{delivery.lastError}</div>}
                  </td>
                  <td>{delivery.attempts}</td>
                  <td>
                    {delivery.status !== "queued" && (
                      <button type="button" disabled={resent.includes(delivery.id)}
                        onClick={() => void resend(delivery.id)}>
                        {resent.includes(delivery.id) ? "Queued" : "Resend"}
                        <span className="visually-hidden"> “{delivery.subject}” to {delivery.recipient}</span>
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager offset={offset} limit={LIMIT} total={list.data.total}
            onPage={(next) => setParams({ ...(status ? { status } : {}), offset: String(next) })} />
        </>
      )}
    </>
  );
}
