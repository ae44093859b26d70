import { describe, expect, it } from "vitest";
import type { SalesRow } from "../api/types";
import { csvWithHeader, currenciesOf } from "./Analytics";

const row = (currency: string, grossRevenue: string): SalesRow => ({
  period: "2026-11-01", currency, grossRevenue, refunded: "0.00", netRevenue: grossRevenue,
  orders: 1, units: 1, refunds: 0, averageOrderValue: grossRevenue,
});

describe("sales report", () => {
  it("offers the currency with the most revenue first", () => {
    expect(currenciesOf([row("EUR", "10.00"), row("USD", "7.00"), row("USD", "9.00")])).toEqual(["USD", "EUR"]);
    expect(currenciesOf([])).toEqual([]);
  });

  it("keeps the header row in the CSV of an empty report", () => {
    expect(csvWithHeader("sales", "\r\n")).toBe(
      "period,currency,grossRevenue,refunded,netRevenue,orders,units,refunds,averageOrderValue\r\n",
    );
    expect(csvWithHeader("top-products", "")).toBe("productId,name,categoryId,currency,units,revenue\r\n");
    expect(csvWithHeader("sales", "period,currency\r\n2026-11-01,USD\r\n")).toBe("period,currency\r\n2026-11-01,USD\r\n");
  });
});
