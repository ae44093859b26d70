import { Link, useSearchParams } from "react-router";
import { orders } from "../api/client";
import { ORDER_STATUSES, type OrderStatus } from "../api/types";
import { StatusBadge } from "../components/OrderStatus";
import { RequireSignIn } from "../components/RequireSignIn";
import { Loading, Pager, PageTitle, ProblemMessage, formatDate, formatMoney } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { useSession } from "../state";

const LIMIT = 20;

export default function Orders() {
  return (
    <RequireSignIn title="Your orders">
      <OrderHistory />
    </RequireSignIn>
  );
}

function OrderHistory() {
  const { state } = useSession();
  const userId = state.status === "signed-in" ? state.user.id : "";
  const [params, setParams] = useSearchParams();
  const status = (params.get("status") ?? "") as OrderStatus | "";
  const offset = Math.max(0, Number(params.get("offset") ?? 0) || 0);
  const list = useAsync(
    () => orders.mine(userId, { status: status || undefined, limit: LIMIT, offset }),
    [userId, status, offset],
  );
  const go = (next: { status?: string; offset?: number }) => {
    const merged = new URLSearchParams();
    const s = next.status ?? status;
    const o = next.offset ?? 0;
    if (s) merged.set("status", s);
    if (o) merged.set("offset", String(o));
    setParams(merged);
  };

  return (
    <div className="narrow">
      <PageTitle>Your orders</PageTitle>
      <div className="field inline-field">
        <label htmlFor="order-status">Status</label>
        <select id="order-status" value={status} onChange={(e) => go({ status: e.target.value })}>
          <option value="">All</option>
          {ORDER_STATUSES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </div>
      {list.loading && <Loading label="Loading orders" />}
      <ProblemMessage error={list.error} />
      {list.data && list.data.items.length === 0 && <p>No orders yet.</p>}
      {list.data && list.data.items.length > 0 && (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Order</th>
              <th scope="col">Placed</th>
              <th scope="col">Status</th>
              <th scope="col">Total</th>
            </tr>
          </thead>
          <tbody>
            {list.data.items.map((order) => (
              <tr key={order.orderId}>
                <td>
                  <Link to={`/orders/${order.orderId}`}>{order.orderId.slice(0, 8)}</Link>
                </td>
                <td>{formatDate(order.createdAt)}</td>
                <td>
                  <StatusBadge status={order.status} />
                </td>
                <td>{formatMoney(order.totalAmount, order.currency)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {list.data && (
        <Pager offset={offset} limit={LIMIT} total={list.data.total} onPage={(next) => go({ offset: next })} />
      )}
    </div>
  );
}
