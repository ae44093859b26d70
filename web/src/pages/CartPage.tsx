import { Link, useNavigate } from "react-router";
import { cartTotal, lineKey } from "../cart/cart";
import { PageTitle, formatMoney } from "../components/ui";
import { useCart, useSession } from "../state";

export function CartPage() {
  const { lines, update } = useCart();
  const { session, state } = useSession();
  const navigate = useNavigate();
  const currency = lines[0]?.currency ?? "USD";

  if (lines.length === 0) {
    return (
      <div className="narrow">
        <PageTitle>Your cart</PageTitle>
        <p>Your cart is empty.</p>
        <Link className="button primary" to="/products">
          Browse the shop
        </Link>
      </div>
    );
  }
  const checkout = () => {
    if (state.status === "signed-in") navigate("/checkout");
    else void session.startSignIn("/checkout");
  };
  return (
    <div className="narrow">
      <PageTitle>Your cart</PageTitle>
      <table className="table cart">
        <caption className="visually-hidden">Items in your cart</caption>
        <thead>
          <tr>
            <th scope="col">Item</th>
            <th scope="col">Price</th>
            <th scope="col">Quantity</th>
            <th scope="col">Total</th>
          </tr>
        </thead>
        <tbody>
          {lines.map((line) => {
            const key = lineKey(line);
            return (
              <tr key={key}>
                <td>
                  <Link to={`/products/${line.productId}`}>{line.name}</Link>
                  {line.variantTitle && <div className="muted small">{line.variantTitle}</div>}
                </td>
                <td>{formatMoney(line.unitPrice, line.currency)}</td>
                <td>
                  <label className="visually-hidden" htmlFor={`qty-${key}`}>
                    Quantity of {line.name}
                  </label>
                  <input
                    id={`qty-${key}`}
                    className="qty"
                    type="number"
                    min={0}
                    max={line.stock || 99}
                    value={line.quantity}
                    onChange={(e) => update(key, Number(e.target.value))}
                  />
                  <button type="button" className="link" onClick={() => update(key, 0)}>
                    Remove<span className="visually-hidden"> {line.name}</span>
                  </button>
                </td>
                <td>{formatMoney(cartTotal([line]), line.currency)}</td>
              </tr>
            );
          })}
        </tbody>
        <tfoot>
          <tr>
            <th scope="row" colSpan={3}>
              Subtotal
            </th>
            <td data-testid="cart-total">{formatMoney(cartTotal(lines), currency)}</td>
          </tr>
        </tfoot>
      </table>
      <div className="actions">
        <Link to="/products">Continue shopping</Link>
        <button type="button" className="primary" onClick={checkout}>
          {state.status === "signed-in" ? "Check out" : "Sign in to check out"}
        </button>
      </div>
    </div>
  );
}
