import { useSearchParams } from "react-router";
import { notifications } from "../api/client";
import { Loading, Pager, PageTitle, ProblemMessage, formatDate } from "../components/ui";
import { useAsync } from "../components/useAsync";

const LIMIT = 50;

export function AdminDeliveries() {
  const [params, setParams] = useSearchParams();
  const offset = Math.max(0, Number(params.get("offset") ?? 0) || 0);
  const list = useAsync(() => notifications.deliveries(LIMIT, offset), [offset]);
  return (
    <>
      <PageTitle>Notification log</PageTitle>
      <button type="button" onClick={list.reload}>Refresh</button>
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
                </tr>
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
