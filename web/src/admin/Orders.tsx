import { useMemo, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { newIdempotencyKey, orders } from "../api/client";
import { ORDER_STATUSES, type OrderStatus, type OrderSummary } from "../api/types";
import { cancelText, StatusBadge } from "../components/OrderStatus";
import { Loading, Pager, PageTitle, ProblemMessage, formatDate, formatMoney } from "../components/ui";
import { useAsync } from "../components/useAsync";

const LIMIT = 25;

export function AdminOrders() {
  const [params, setParams] = useSearchParams();
  const status = (params.get("status") ?? "") as OrderStatus | "";
  const offset = Math.max(0, Number(params.get("offset") ?? 0) || 0);
  const list = useAsync(
    () => orders.all({ status: status || undefined, limit: LIMIT, offset }),
    [status, offset],
  );
  return (
    <>
      <PageTitle>Orders</PageTitle>
      <div className="field inline-field">
        <label htmlFor="admin-order-status">Status</label>
        <select id="admin-order-status" value={status}
          onChange={(e) => setParams(e.target.value ? { status: e.target.value } : {})}>
          <option value="">All</option>
          {ORDER_STATUSES.map((s) => (
            <option key={s} value={s}>{s}</option>
          ))}
        </select>
      </div>
      {list.loading && <Loading label="Loading orders" />}
      <ProblemMessage error={list.error} />
      {list.data && list.data.items.length === 0 && <p>No orders.</p>}
      {list.data && list.data.items.length > 0 && (
        <>
          <ul className="order-admin-list">
            {list.data.items.map((order) => (
              <OrderRow key={order.orderId} order={order} onChange={list.reload} />
            ))}
          </ul>
          <Pager
            offset={offset}
            limit={LIMIT}
            total={list.data.total}
            onPage={(next) => setParams({ ...(status ? { status } : {}), offset: String(next) })}
          />
        </>
      )}
    </>
  );
}

function OrderRow({ order, onChange }: { order: OrderSummary; onChange: () => void }) {
  const [action, setAction] = useState<"" | "ship" | "refund">("");
  const [tracking, setTracking] = useState({ trackingNumber: "", carrier: "" });
  const [refund, setRefund] = useState({ amount: "", reason: "" });
  const [error, setError] = useState<unknown>(null);
  // The same refund sent twice (a lost answer, a second click) is paid once.
  const refundKey = useMemo(() => newIdempotencyKey(), [refund.amount, refund.reason]); // eslint-disable-line react-hooks/exhaustive-deps

  const run = async (work: () => Promise<unknown>) => {
    setError(null);
    try {
      await work();
      setAction("");
      onChange();
    } catch (failure) {
      setError(failure);
    }
  };
  const ship = (event: FormEvent) => {
    event.preventDefault();
    void run(() => orders.ship(order.orderId, tracking.trackingNumber, tracking.carrier));
  };
  const refundOrder = (event: FormEvent) => {
    event.preventDefault();
    void run(() => orders.refund(order.orderId, refund.reason, refund.amount || undefined, refundKey));
  };
  const id = order.orderId;
  return (
    <li className="order-admin">
      <div className="row">
        <Link to={`/orders/${id}`}>{id.slice(0, 8)}</Link>
        <StatusBadge status={order.status} />
        <span>{formatMoney(order.totalAmount, order.currency)}</span>
        <span className="muted small">{formatDate(order.createdAt)}</span>
        {order.itemCount !== undefined && <span className="muted small">{order.itemCount} items</span>}
        {order.status === "CANCELLED" && cancelText(order) && (
          <span className="muted small">{cancelText(order)}</span>
        )}
        <span className="spacer" />
        {order.status === "CONFIRMED" && (
          <button type="button" onClick={() => setAction(action === "ship" ? "" : "ship")}>Ship</button>
        )}
        {order.status === "SHIPPED" && (
          <button type="button" onClick={() => void run(() => orders.deliver(id))}>Mark delivered</button>
        )}
        {(order.status === "PENDING" || order.status === "CONFIRMED") && (
          <button type="button" onClick={() => {
            if (window.confirm("Cancel this order?")) void run(() => orders.cancel(id, "Cancelled by staff"));
          }}>
            Cancel
          </button>
        )}
        {["CONFIRMED", "SHIPPED", "DELIVERED"].includes(order.status) && (
          <button type="button" onClick={() => setAction(action === "refund" ? "" : "refund")}>Refund</button>
        )}
      </div>
      {action === "ship" && (
        <form onSubmit={ship} className="inline-form">
          <div className="field">
            <label htmlFor={`carrier-${id}`}>Carrier</label>
            <input id={`carrier-${id}`} required value={tracking.carrier}
              onChange={(e) => setTracking({ ...tracking, carrier: e.target.value })} />
          </div>
          <div className="field">
            <label htmlFor={`tracking-${id}`}>Tracking number</label>
            <input id={`tracking-${id}`} required value={tracking.trackingNumber}
              onChange={(e) => setTracking({ ...tracking, trackingNumber: e.target.value })} />
          </div>
          <button type="submit" className="primary">Mark shipped</button>
        </form>
      )}
      {action === "refund" && (
        <form onSubmit={refundOrder} className="inline-form">
          <div className="field small-field">
            <label htmlFor={`amount-${id}`}>Amount (empty: all)</label>
            <input id={`amount-${id}`} inputMode="decimal" pattern="[0-9]+(\.[0-9]{1,2})?" value={refund.amount}
              onChange={(e) => setRefund({ ...refund, amount: e.target.value })} />
          </div>
          <div className="field">
            <label htmlFor={`reason-${id}`}>Reason</label>
            <input id={`reason-${id}`} required maxLength={40} placeholder="e.g. damaged in transit" value={refund.reason}
              onChange={(e) => setRefund({ ...refund, reason: e.target.value })} />
          </div>
          <button type="submit" className="primary">Refund</button>
        </form>
      )}
      <ProblemMessage error={error} title="The order was not changed" />
    </li>
  );
}
