import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MemoryRouter, Route, Routes } from "react-router";
import { Session } from "../auth/session";
import { CART_KEY, type CartLine } from "../cart/cart";
import { CartProvider, SessionProvider } from "../state";
import Checkout from "./Checkout";
import OrderPage from "./OrderPage";

const line: CartLine = {
  productId: "p-1", variantId: "v-1", name: "Brass Lamp", variantTitle: null, unitPrice: "20.00",
  currency: "USD", imageUrl: null, quantity: 2, stock: 5,
};
const user = {
  id: "u-1", email: "ada@example.com", firstName: "Ada", lastName: "L", phoneNumber: null,
  roles: ["USER"], emailVerified: true, createdAt: "", updatedAt: "",
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function order(status: string, extra: Record<string, unknown> = {}) {
  return {
    orderId: "o-1", userId: "u-1", status, totalAmount: "40.00", currency: "USD",
    items: [{ productId: "p-1", name: "Brass Lamp", quantity: 2, unitPrice: "20.00", lineTotal: "40.00" }],
    statusHistory: [{ status: "PENDING", at: "2026-11-24T10:00:00Z", reason: null }],
    ...extra,
  };
}

async function signedInApp(orderStatuses: Array<ReturnType<typeof order>>) {
  const posted: Array<{ body: unknown; key: string | null }> = [];
  vi.stubGlobal("fetch", async (url: string, init: RequestInit = {}) => {
    if (url === "/api/v1/auth/token") return json({ access_token: "at", refresh_token: "rt-2", expires_in: 900 });
    if (url === "/api/v1/users/me") return json(user);
    if (url === "/api/v1/orders" && init.method === "POST") {
      posted.push({ body: JSON.parse(String(init.body)), key: (init.headers as Record<string, string>)["Idempotency-Key"] });
      return json({ orderId: "o-1", status: "PENDING", totalAmount: "40.00" }, 201);
    }
    if (url === "/api/v1/orders/o-1") return json(orderStatuses.length > 1 ? orderStatuses.shift() : orderStatuses[0]);
    throw new Error(`unexpected ${init.method ?? "GET"} ${url}`);
  });
  localStorage.setItem("panthera.refreshToken", "rt-1");
  localStorage.setItem(CART_KEY, JSON.stringify([line]));
  const session = new Session();
  await session.restore();
  render(
    <MemoryRouter initialEntries={["/checkout"]}>
      <SessionProvider session={session}>
        <CartProvider>
          <Routes>
            <Route path="/checkout" element={<Checkout />} />
            <Route path="/orders/:orderId" element={<OrderPage />} />
          </Routes>
        </CartProvider>
      </SessionProvider>
    </MemoryRouter>,
  );
  return posted;
}

async function placeOrder(card: RegExp) {
  await screen.findByRole("heading", { name: "Checkout" });
  for (const [label, value] of [
    ["Full name", "Ada Lovelace"], ["Street and number", "12 St James's Square"],
    ["Postal code", "SW1Y 4JH"], ["City", "London"], ["Country", "UK"],
  ]) {
    fireEvent.change(screen.getByLabelText(label), { target: { value } });
  }
  fireEvent.click(screen.getByLabelText(card));
  fireEvent.click(screen.getByRole("button", { name: "Place order" }));
}

describe("checkout", () => {
  beforeEach(() => {
    localStorage.clear();
    sessionStorage.clear();
  });
  afterEach(() => {
    cleanup();
    vi.unstubAllGlobals();
  });

  it("places the order with an idempotency key, follows it to CONFIRMED and empties the cart", async () => {
    const posted = await signedInApp([
      order("PENDING"),
      order("CONFIRMED", { statusHistory: [{ status: "PENDING", at: "2026-11-24T10:00:00Z" }, { status: "CONFIRMED", at: "2026-11-24T10:00:01Z" }] }),
    ]);
    await placeOrder(/Visa ending 4242/);
    await screen.findByText("Status:");
    expect(posted).toEqual([
      {
        body: {
          items: [{ productId: "p-1", variantId: "v-1", quantity: 2 }],
          shippingAddress: "Ada Lovelace\n12 St James's Square\nSW1Y 4JH London\nUK",
          paymentMethod: "tok_visa",
        },
        key: expect.stringMatching(/^[0-9a-f-]{36}$/),
      },
    ]);
    // The page asks again every second while the order is PENDING.
    await screen.findByText("Thank you! Your order is confirmed.", {}, { timeout: 5000 });
    await waitFor(() => expect(JSON.parse(localStorage.getItem(CART_KEY)!)).toEqual([]));
  });

  it("a declined card ends CANCELLED with the reason and keeps the cart", async () => {
    await signedInApp([
      order("PENDING"),
      order("CANCELLED", { cancelReason: "card_declined", cancelMessage: null }),
    ]);
    await placeOrder(/Card declined/);
    await screen.findByText(/The order was cancelled: Card declined/, {}, { timeout: 5000 });
    expect(screen.getByRole("link", { name: "Try again with another card" })).toBeTruthy();
    expect(JSON.parse(localStorage.getItem(CART_KEY)!)).toHaveLength(1);
  });
});
