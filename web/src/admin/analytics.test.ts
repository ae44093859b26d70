import { describe, expect, it } from "vitest";
import type { SalesRow } from "../api/types";
import { currenciesOf } from "./Analytics";

const row = (currency: string, grossRevenue: string): SalesRow => ({
  period: "2026-11-01", currency, grossRevenue, refunded: "0.00", netRevenue: grossRevenue,
  orders: 1, units: 1, refunds: 0, averageOrderValue: grossRevenue,
});

describe("sales report", () => {
  it("offers the currency with the most revenue first", () => {
    expect(currenciesOf([row("EUR", "10.00"), row("USD", "7.00"), row("USD", "9.00")])).toEqual(["USD", "EUR"]);
    expect(currenciesOf([])).toEqual([]);
  });
});
