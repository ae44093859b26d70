import type { Order, OrderStatus, OrderSummary } from "../api/types";
import { formatDate } from "./ui";

export function StatusBadge({ status }: { status: OrderStatus }) {
  return <span className={`status status-${status.toLowerCase()}`}>{status}</span>;
}

/** Why an order was cancelled, for people: the platform's sentence, else its code made readable. */
export function cancelText(order: Pick<Order, "cancelReason" | "cancelMessage"> | OrderSummary): string {
  const message = "cancelMessage" in order ? order.cancelMessage : null;
  if (message) return message;
  if (!order.cancelReason) return "";
  const words = order.cancelReason.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

const STEPS: Array<{ status: OrderStatus; label: string }> = [
  { status: "PENDING", label: "Order placed: reserving stock and taking payment" },
  { status: "CONFIRMED", label: "Paid and confirmed" },
  { status: "SHIPPED", label: "Shipped" },
  { status: "DELIVERED", label: "Delivered" },
];

/** The saga's progress as a list of steps, with the way out when it failed. */
export function OrderProgress({ order }: { order: Order }) {
  const reached = new Set(order.statusHistory.map((entry) => entry.status));
  reached.add(order.status);
  const when = (status: OrderStatus) =>
    order.statusHistory.find((entry) => entry.status === status)?.at;
  const ended = order.status === "CANCELLED" || order.status === "REFUNDED";
  return (
    <ol className="progress" aria-label="Order progress">
      {STEPS.filter((step) => !ended || reached.has(step.status)).map((step) => (
        <li key={step.status} className={reached.has(step.status) ? "done" : "todo"}>
          <span>{step.label}</span>
          {when(step.status) && <time className="muted small"> {formatDate(when(step.status))}</time>}
          {!reached.has(step.status) && <span className="visually-hidden"> (not yet)</span>}
        </li>
      ))}
      {ended && (
        <li className="failed">
          <span>{order.status === "CANCELLED" ? "Cancelled" : "Refunded"}</span>
          {cancelText(order) && <span>: {cancelText(order)}</span>}
        </li>
      )}
    </ol>
  );
}
