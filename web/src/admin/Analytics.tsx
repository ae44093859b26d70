import { useState } from "react";
import { analytics } from "../api/client";
import { Loading, PageTitle, ProblemMessage } from "../components/ui";
import { useAsync } from "../components/useAsync";
import { SalesChart } from "./SalesChart";

function isoDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

export default function Analytics() {
  const [range, setRange] = useState(() => {
    const to = new Date();
    const from = new Date(to.getTime() - 29 * 86_400_000);
    return { from: isoDay(from), to: isoDay(to), granularity: "day" };
  });
  const sales = useAsync(() => analytics.sales(range), [range.from, range.to, range.granularity]);
  const [csvError, setCsvError] = useState<unknown>(null);

  const download = async () => {
    setCsvError(null);
    try {
      const csv = await analytics.salesCsv(range);
      const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
      const link = document.createElement("a");
      link.href = url;
      link.download = `sales-${range.from}-${range.to}.csv`;
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
          <input id="a-from" type="date" value={range.from} onChange={(e) => setRange({ ...range, from: e.target.value })} />
        </div>
        <div className="field">
          <label htmlFor="a-to">To</label>
          <input id="a-to" type="date" value={range.to} onChange={(e) => setRange({ ...range, to: e.target.value })} />
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
        <button type="button" onClick={() => void download()}>Download CSV</button>
      </form>
      <ProblemMessage error={csvError} title="No CSV" />
      {sales.loading && <Loading label="Loading sales" />}
      <ProblemMessage error={sales.error} title="Sales figures are not available" />
      {sales.data && sales.data.length > 0 && <SalesChart points={sales.data} currency="USD" />}
      {sales.data && (
        <table className="table">
          <caption>Sales per {range.granularity}</caption>
          <thead>
            <tr>
              <th scope="col">Period</th>
              <th scope="col">Orders</th>
              <th scope="col">Revenue</th>
            </tr>
          </thead>
          <tbody>
            {sales.data.map((point) => (
              <tr key={point.period}>
                <td>{point.period}</td>
                <td>{point.orders}</td>
                <td>{point.revenue}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
