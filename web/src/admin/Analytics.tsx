import { useMemo, useState } from "react";
import { analytics } from "../api/client";
import type { SalesRow } from "../api/types";
import { Loading, PageTitle, ProblemMessage, formatMoney } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { SalesChart } from "./SalesChart";

function isoDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** The currencies a report holds, the one with the most revenue first. */
export function currenciesOf(rows: SalesRow[]): string[] {
  const totals = new Map<string, number>();
  for (const row of rows) totals.set(row.currency, (totals.get(row.currency) ?? 0) + Number(row.grossRevenue));
  return [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([currency]) => currency);
}

// The platform answers an empty report as a blank CSV; a download still names its columns.
const CSV_COLUMNS = {
  sales: ["period", "currency", "grossRevenue", "refunded", "netRevenue", "orders", "units", "refunds", "averageOrderValue"],
  "top-products": ["productId", "name", "categoryId", "currency", "units", "revenue"],
} as const;

export function csvWithHeader(report: keyof typeof CSV_COLUMNS, csv: string): string {
  return csv.trim() ? csv : `${CSV_COLUMNS[report].join(",")}\r\n`;
}

export default function Analytics() {
  const [range, setRange] = useState(() => {
    const to = new Date();
    const from = new Date(to.getTime() - 29 * 86_400_000);
    return { from: isoDay(from), to: isoDay(to), granularity: "day" };
  });
  const key = [range.from, range.to, range.granularity];
  const sales = useAsync(() => analytics.sales(range), key);
  const top = useAsync(() => analytics.topProducts({ from: range.from, to: range.to, limit: 10 }), key);
  const funnel = useAsync(() => analytics.funnel({ from: range.from, to: range.to }), key);
  const [csvError, setCsvError] = useState<unknown>(null);
  const currencies = currenciesOf(sales.data?.rows ?? []);
  const [picked, setPicked] = useState("");
  const currency = currencies.includes(picked) ? picked : (currencies[0] ?? "USD");
  const rows = useMemo(
    () => (sales.data?.rows ?? []).filter((row) => row.currency === currency),
    [sales.data, currency],
  );

  const download = async (report: "sales" | "top-products") => {
    setCsvError(null);
    try {
      const query = report === "sales" ? range : { from: range.from, to: range.to, limit: 100 };
      const csv = csvWithHeader(report, await analytics.csv(report, query));
      const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
      const link = document.createElement("a");
      link.href = url;
      link.download = `${report}_${range.from}_${range.to}.csv`;
      link.click();
      URL.revokeObjectURL(url);
    } catch (failure) {
      setCsvError(failure);
    }
  };

  return (
    <>
      <PageTitle>Sales</PageTitle>
      <form className="inline-form" onSubmit={(e) => e.preventDefault()} aria-label="Period">
        <div className="field">
          <label htmlFor="a-from">From</label>
          <input id="a-from" type="date" value={range.from} max={range.to}
            onChange={(e) => e.target.value && setRange({ ...range, from: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="a-to">To</label>
          <input id="a-to" type="date" value={range.to} min={range.from}
            onChange={(e) => e.target.value && setRange({ ...range, to: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="a-granularity">Per</label>
          <select id="a-granularity" value={range.granularity}
            onChange={(e) => setRange({ ...range, granularity: e.target.value })}>
            <option value="day">day</option>
            <option value="week">week</option>
            <option value="month">month</option>
          </select>
        </div>
        {currencies.length > 1 && (
          <div className="field">
            <label htmlFor="a-currency">Currency</label>
            <select id="a-currency" value={currency} onChange={(e) => setPicked(e.target.value)}>
              {currencies.map((c) => (
                <option key={c} value={c}>{c}</option>
              ))}
            </select>
          </div>
        )}
        <button type="button" onClick={() => void download("sales")}>Sales as CSV</button>
        <button type="button" onClick={() => void download("top-products")}>Top products as CSV</button>
      </form>
      <ProblemMessage error={csvError} title="The CSV could not be made" />
      {sales.loading && <Loading label="Loading sales" />}
      <ProblemMessage error={sales.error} title="Sales figures are not available" />
      {sales.data && rows.length === 0 && <p>No confirmed orders in this period.</p>}
      {rows.length > 0 && (
        <>
          <SalesChart rows={rows} currency={currency} />
          <table className="table">
            <caption>Sales per {range.granularity} ({currency})</caption>
            <thead>
              <tr>
                <th scope="col">Period</th>
                <th scope="col">Orders</th>
                <th scope="col">Units</th>
                <th scope="col">Gross</th>
                <th scope="col">Refunded</th>
                <th scope="col">Net</th>
                <th scope="col">Average order</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.period}>
                  <td>{row.period}</td>
                  <td>{row.orders}</td>
                  <td>{row.units}</td>
                  <td>{formatMoney(row.grossRevenue, currency)}</td>
                  <td>{formatMoney(row.refunded, currency)}</td>
                  <td>{formatMoney(row.netRevenue, currency)}</td>
                  <td>{formatMoney(row.averageOrderValue, currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h2>Best sellers</h2>
      {top.loading && <Loading label="Loading best sellers" />}
      <ProblemMessage error={top.error} />
      {top.data && (
        top.data.rows.length === 0 ? <p>None yet.</p> : (
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Product</th>
                <th scope="col">Units</th>
                <th scope="col">Revenue</th>
              </tr>
            </thead>
            <tbody>
              {top.data.rows.map((row) => (
                <tr key={`${row.productId}-${row.currency}`}>
                  <td>{row.name}</td>
                  <td>{row.units}</td>
                  <td>{formatMoney(row.revenue, row.currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
      <h2>From views to payments</h2>
      {funnel.loading && <Loading label="Loading the funnel" />}
      <ProblemMessage error={funnel.error} />
      {funnel.data && (
        <ol className="funnel">
          {funnel.data.rows.map((stage) => (
            <li key={stage.stage}>
              <strong>{stage.count}</strong> {stage.stage.replace(/([A-Z])/g, " $1").toLowerCase()}
              {stage.conversionFromPrevious !== null && (
                <span className="muted"> ({(stage.conversionFromPrevious * 100).toFixed(1)} % of the step before)</span>
              )}
            </li>
          ))}
        </ol>
      )}
    </>
  );
}
