// The cart lives in localStorage: it survives reloads and is shared by tabs, and
// a shopper needs no account to fill it. Prices here are what the shopper saw;
// the order is priced again by the platform when placed.

export interface CartLine {
  productId: string;
  variantId: string | null;
  name: string;
  variantTitle: string | null;
  unitPrice: string;
  currency: string;
  imageUrl: string | null;
  quantity: number;
  stock: number;
}

export const CART_KEY = "panthera.cart";
export const MAX_QUANTITY = 99;

export function lineKey(line: Pick<CartLine, "productId" | "variantId">): string {
  return `${line.productId}:${line.variantId ?? ""}`;
}

export function readCart(storage: Storage = localStorage): CartLine[] {
  try {
    const parsed: unknown = JSON.parse(storage.getItem(CART_KEY) ?? "[]");
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (line): line is CartLine =>
        typeof line === "object" &&
        line !== null &&
        typeof line.productId === "string" &&
        typeof line.quantity === "number" &&
        line.quantity > 0,
    );
  } catch {
    return [];
  }
}

export function addLine(lines: CartLine[], added: CartLine): CartLine[] {
  const key = lineKey(added);
  const existing = lines.find((line) => lineKey(line) === key);
  if (!existing) return [...lines, { ...added, quantity: clamp(added.quantity, added.stock) }];
  return lines.map((line) =>
    lineKey(line) === key
      ? { ...line, ...added, quantity: clamp(line.quantity + added.quantity, added.stock) }
      : line,
  );
}

export function setQuantity(lines: CartLine[], key: string, quantity: number): CartLine[] {
  if (quantity <= 0) return lines.filter((line) => lineKey(line) !== key);
  return lines.map((line) =>
    lineKey(line) === key ? { ...line, quantity: clamp(quantity, line.stock) } : line,
  );
}

function clamp(quantity: number, stock: number): number {
  const ceiling = Math.min(MAX_QUANTITY, stock > 0 ? stock : MAX_QUANTITY);
  return Math.max(1, Math.min(Math.floor(quantity), ceiling));
}

/** Adds decimal strings exactly, in minor units: "19.99" x 3 is "59.97", not 59.969999. */
export function cartTotal(lines: CartLine[]): string {
  const cents = lines.reduce((sum, line) => sum + toMinor(line.unitPrice) * line.quantity, 0);
  return fromMinor(cents);
}

export function toMinor(amount: string): number {
  const [whole, fraction = ""] = amount.trim().split(".");
  const sign = whole.startsWith("-") ? -1 : 1;
  const units = Math.abs(Number(whole || "0")) * 100 + Number((fraction + "00").slice(0, 2));
  return sign * units;
}

export function fromMinor(minor: number): string {
  const sign = minor < 0 ? "-" : "";
  const absolute = Math.abs(minor);
  return `${sign}${Math.floor(absolute / 100)}.${String(absolute % 100).padStart(2, "0")}`;
}

export function itemCount(lines: CartLine[]): number {
  return lines.reduce((sum, line) => sum + line.quantity, 0);
}
