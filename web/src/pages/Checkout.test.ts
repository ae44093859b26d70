import { describe, expect, it } from "vitest";
import { shippingAddress } from "./Checkout";

describe("shipping address", () => {
  it("reads as a label would", () => {
    expect(
      shippingAddress({ name: "Ada Lovelace", line1: "12 St James's Sq", city: "London", postcode: "SW1Y 4JH", country: "UK" }),
    ).toBe("Ada Lovelace\n12 St James's Sq\nSW1Y 4JH London\nUK");
  });
});
