import { describe, expect, it } from "vitest";
import { addLine, cartTotal, CART_KEY, type CartLine, lineKey, readCart, setQuantity } from "./cart";

const lamp: CartLine = {
  productId: "p1",
  variantId: "v1",
  name: "Lamp",
  variantTitle: "Red",
  unitPrice: "19.99",
  currency: "USD",
  imageUrl: null,
  quantity: 1,
  stock: 5,
};

describe("cart", () => {
  it("merges the same variant and keeps other variants apart", () => {
    let lines = addLine([], lamp);
    lines = addLine(lines, { ...lamp, quantity: 2 });
    lines = addLine(lines, { ...lamp, variantId: "v2" });
    expect(lines.map((l) => [lineKey(l), l.quantity])).toEqual([
      ["p1:v1", 3],
      ["p1:v2", 1],
    ]);
  });

  it("never holds more than the stock", () => {
    const lines = addLine([], { ...lamp, quantity: 40 });
    expect(lines[0].quantity).toBe(5);
    expect(setQuantity(lines, "p1:v1", 9)[0].quantity).toBe(5);
  });

  it("drops a line set to zero", () => {
    expect(setQuantity([lamp], "p1:v1", 0)).toEqual([]);
  });

  it("adds money exactly", () => {
    expect(cartTotal([{ ...lamp, quantity: 3 }])).toBe("59.97");
    expect(cartTotal([{ ...lamp, unitPrice: "0.1" }, { ...lamp, unitPrice: "0.2" }])).toBe("0.30");
    expect(cartTotal([])).toBe("0.00");
  });

  it("survives a reload and ignores garbage", () => {
    localStorage.setItem(CART_KEY, JSON.stringify([lamp, { nonsense: true }]));
    expect(readCart()).toEqual([lamp]);
    localStorage.setItem(CART_KEY, "{not json");
    expect(readCart()).toEqual([]);
  });
});
