import { useMemo, useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { newIdempotencyKey, orders } from "../api/client";
import { cartTotal, lineKey } from "../cart/cart";
import { RequireSignIn } from "../components/RequireSignIn";
import { PageTitle, ProblemMessage, formatMoney } from "../components/ui";
import { useCart } from "../state";

export const TEST_CARDS = [
  { token: "tok_visa", label: "Visa ending 4242 (succeeds)" },
  { token: "tok_chargeDeclined", label: "Card declined" },
  { token: "tok_chargeDeclinedInsufficientFunds", label: "Declined: insufficient funds" },
  { token: "tok_chargeDeclinedProcessingError", label: "Declined: processing error" },
] as const;

export const CHECKOUT_ORDER_KEY = "panthera.checkoutOrder";

export function shippingAddress(fields: Record<"name" | "line1" | "city" | "postcode" | "country", string>): string {
  return [fields.name, fields.line1, `${fields.postcode} ${fields.city}`.trim(), fields.country]
    .map((part) => part.trim())
    .filter(Boolean)
    .join("\n");
}

export default function Checkout() {
  return (
    <RequireSignIn title="Checkout">
      <CheckoutForm />
    </RequireSignIn>
  );
}

function CheckoutForm() {
  const { lines } = useCart();
  const navigate = useNavigate();
  const [address, setAddress] = useState({ name: "", line1: "", city: "", postcode: "", country: "" });
  const [card, setCard] = useState<string>(TEST_CARDS[0].token);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  // One key per cart and address: a retried submit (a lost answer, a double click)
  // is the same order to the platform, not a second one.
  const contents = JSON.stringify([lines.map((l) => [lineKey(l), l.quantity]), address, card]);
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [contents]); // eslint-disable-line react-hooks/exhaustive-deps

  if (lines.length === 0) {
    return (
      <div className="narrow">
        <PageTitle>Checkout</PageTitle>
        <p>
          Your cart is empty. <Link to="/products">Browse the shop</Link>.
        </p>
      </div>
    );
  }
  const currency = lines[0].currency;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const placed = await orders.place(
        {
          items: lines.map((line) => ({
            productId: line.productId,
            ...(line.variantId ? { variantId: line.variantId } : {}),
            quantity: line.quantity,
          })),
          shippingAddress: shippingAddress(address),
          paymentMethod: card,
        },
        idempotencyKey,
      );
      sessionStorage.setItem(CHECKOUT_ORDER_KEY, placed.orderId);
      navigate(`/orders/${placed.orderId}`);
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  };

  const input = (name: keyof typeof address, label: string, autoComplete: string) => (
    <div className="field">
      <label htmlFor={`ship-${name}`}>{label}</label>
      <input
        id={`ship-${name}`}
        required
        autoComplete={autoComplete}
        value={address[name]}
        onChange={(e) => setAddress({ ...address, [name]: e.target.value })}
      />
    </div>
  );

  return (
    <div className="narrow">
      <PageTitle>Checkout</PageTitle>
      <form onSubmit={submit} className="stack">
        <fieldset>
          <legend>Shipping address</legend>
          {input("name", "Full name", "name")}
          {input("line1", "Street and number", "address-line1")}
          {input("postcode", "Postal code", "postal-code")}
          {input("city", "City", "address-level2")}
          {input("country", "Country", "country-name")}
        </fieldset>
        <fieldset>
          <legend>Payment (test cards)</legend>
          {TEST_CARDS.map((option) => (
            <div className="field checkbox" key={option.token}>
              <input
                type="radio"
                id={`card-${option.token}`}
                name="card"
                value={option.token}
                checked={card === option.token}
                onChange={() => setCard(option.token)}
              />
              <label htmlFor={`card-${option.token}`}>{option.label}</label>
            </div>
          ))}
        </fieldset>
        <section aria-labelledby="summary-heading" className="summary">
          <h2 id="summary-heading">Order summary</h2>
          <ul>
            {lines.map((line) => (
              <li key={lineKey(line)}>
                {line.quantity} × {line.name}
                {line.variantTitle ? ` (${line.variantTitle})` : ""} —{" "}
                {formatMoney(cartTotal([line]), line.currency)}
              </li>
            ))}
          </ul>
          <p>
            <strong>Total: {formatMoney(cartTotal(lines), currency)}</strong>
          </p>
        </section>
        <ProblemMessage error={error} title="The order was not placed" />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Placing order…" : "Place order"}
        </button>
      </form>
    </div>
  );
}
