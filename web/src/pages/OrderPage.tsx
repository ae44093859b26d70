import { useEffect, useState } from "react";
import { Link, useParams } from "react-router";
import { orders } from "../api/client";
import type { Order } from "../api/types";
import { cancelText, OrderProgress, StatusBadge } from "../components/OrderStatus";
import { RequireSignIn } from "../components/RequireSignIn";
import { Loading, Notice, PageTitle, ProblemMessage, formatDate, formatMoney } from "../components/ui";
import { useCart } from "../state";
import { CHECKOUT_ORDER_KEY } from "./Checkout";

// The saga usually settles within a second or two; after this the page stops asking.
const POLL_MS = 1000;
const POLL_LIMIT = 60;

export default function OrderPage() {
  return (
    <RequireSignIn title="Order">
      <OrderView />
    </RequireSignIn>
  );
}

function OrderView() {
  const { orderId = "" } = useParams();
  const cart = useCart();
  const [order, setOrder] = useState<Order>();
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let stopped = false;
    let polls = 0;
    let timer: number | undefined;
    const load = async () => {
      try {
        const fresh = await orders.get(orderId);
        if (stopped) return;
        setOrder(fresh);
        setError(null);
        if (fresh.status === "PENDING" && ++polls < POLL_LIMIT) {
          timer = window.setTimeout(() => void load(), POLL_MS);
        }
      } catch (failure) {
        if (!stopped) setError(failure);
      }
    };
    void load();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [orderId]);

  const fromThisCart = sessionStorage.getItem(CHECKOUT_ORDER_KEY) === orderId;
  useEffect(() => {
    // The cart empties once its order is paid; a declined card leaves it for another try.
    if (fromThisCart && order && order.status !== "PENDING") {
      sessionStorage.removeItem(CHECKOUT_ORDER_KEY);
      if (order.status === "CONFIRMED") cart.clear();
    }
  }, [order, fromThisCart]); // eslint-disable-line react-hooks/exhaustive-deps

  const cancel = async () => {
    setBusy(true);
    try {
      await orders.cancel(orderId, "Cancelled by the customer");
      setOrder(await orders.get(orderId));
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  if (!order) {
    return error ? <ProblemMessage error={error} /> : <Loading label="Loading order" />;
  }
  const placedFromCart = fromThisCart || (order.status === "CANCELLED" && cart.lines.length > 0);
  return (
    <div className="narrow">
      <PageTitle>{`Order ${order.orderId.slice(0, 8)}`}</PageTitle>
      <p>
        Status: <StatusBadge status={order.status} />
        {order.status === "PENDING" && <span className="spinner inline" aria-hidden="true" />}
      </p>
      <div aria-live="polite">
        {order.status === "CONFIRMED" && <Notice>Thank you! Your order is confirmed.</Notice>}
        {order.status === "CANCELLED" && placedFromCart && (
          <div className="problem" role="alert">
            <strong>The order was cancelled{cancelText(order) ? `: ${cancelText(order).replace(/\.$/, "")}` : ""}.</strong>
            <p>
              Your cart still holds the items. <Link to="/checkout">Try again with another card</Link>.
            </p>
          </div>
        )}
      </div>
      <OrderProgress order={order} />
      <ProblemMessage error={error} />
      <table className="table">
        <caption className="visually-hidden">Items</caption>
        <thead>
          <tr>
            <th scope="col">Item</th>
            <th scope="col">Quantity</th>
            <th scope="col">Price</th>
            <th scope="col">Total</th>
          </tr>
        </thead>
        <tbody>
          {order.items.map((item, index) => (
            <tr key={`${item.productId}-${index}`}>
              <td>
                <Link to={`/products/${item.productId}`}>{item.name}</Link>
              </td>
              <td>{item.quantity}</td>
              <td>{formatMoney(item.unitPrice, order.currency)}</td>
              <td>{formatMoney(item.lineTotal, order.currency)}</td>
            </tr>
          ))}
        </tbody>
        <tfoot>
          <tr>
            <th scope="row" colSpan={3}>
              Total
            </th>
            <td>{formatMoney(order.totalAmount, order.currency)}</td>
          </tr>
        </tfoot>
      </table>
      {order.shippingAddress && (
        <>
          <h2>Shipping to</h2>
          <address className="pre">{order.shippingAddress}</address>
        </>
      )}
      {order.trackingNumber && (
        <p>
          Tracking: {order.carrier} {order.trackingNumber}
        </p>
      )}
      <h2>History</h2>
      <ul className="history">
        {order.statusHistory.map((entry, index) => (
          <li key={index}>
            <StatusBadge status={entry.status} /> {formatDate(entry.at)}
            {entry.reason ? ` — ${entry.reason}` : ""}
          </li>
        ))}
      </ul>
      {(order.status === "PENDING" || order.status === "CONFIRMED") && (
        <button type="button" onClick={() => void cancel()} disabled={busy}>
          Cancel order
        </button>
      )}
      <p>
        <Link to="/orders">All your orders</Link>
      </p>
    </div>
  );
}
