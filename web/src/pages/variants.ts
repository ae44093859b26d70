import type { ProductDetail, Variant } from "../api/types";

/** The variant whose option values are exactly the chosen ones. */
export function findVariant(
  product: Pick<ProductDetail, "variants">,
  chosen: Record<string, string>,
): Variant | undefined {
  return product.variants.find((variant) =>
    Object.entries(variant.optionValues).every(([name, value]) => chosen[name] === value),
  );
}

/** What a product page starts with: the first variant that is in stock, else the first. */
export function initialChoice(product: Pick<ProductDetail, "variants">): Record<string, string> {
  const start = product.variants.find((v) => v.stock > 0) ?? product.variants[0];
  return start ? { ...start.optionValues } : {};
}
