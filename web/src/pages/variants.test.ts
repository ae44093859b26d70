import { describe, expect, it } from "vitest";
import type { Variant } from "../api/types";
import { findVariant, initialChoice } from "./variants";

const variant = (id: string, optionValues: Record<string, string>, stock: number): Variant => ({
  variantId: id, sku: id, title: id, optionValues, price: "1.00", stock, onHand: stock, reserved: 0,
});

describe("variants", () => {
  const product = {
    variants: [
      variant("s-red", { Size: "S", Colour: "Red" }, 0),
      variant("m-red", { Size: "M", Colour: "Red" }, 4),
      variant("m-blue", { Size: "M", Colour: "Blue" }, 2),
    ],
  };

  it("starts on a variant in stock", () => {
    expect(initialChoice(product)).toEqual({ Size: "M", Colour: "Red" });
  });

  it("finds the variant for the chosen options", () => {
    expect(findVariant(product, { Size: "M", Colour: "Blue" })?.variantId).toBe("m-blue");
    expect(findVariant(product, { Size: "S", Colour: "Blue" })).toBeUndefined();
  });

  it("treats a product without options as its single variant", () => {
    const single = { variants: [variant("only", {}, 3)] };
    expect(findVariant(single, initialChoice(single))?.variantId).toBe("only");
  });
});
