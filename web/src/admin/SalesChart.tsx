import { useEffect, useRef } from "react";
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import type { SalesRow } from "../api/types";

// Only the pieces drawn here: the rest of Chart.js stays out of the bundle.
Chart.register(BarController, BarElement, CategoryScale, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip);

/** Revenue as bars and order counts as a line; the table beside it carries the same figures for screen readers. */
export function SalesChart({ rows, currency }: { rows: SalesRow[]; currency: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: rows.map((r) => r.period),
        datasets: [
          { type: "bar", label: `Net revenue (${currency})`, data: rows.map((r) => Number(r.netRevenue)), backgroundColor: "#1d5fa7", yAxisID: "revenue" },
          { type: "line", label: "Orders", data: rows.map((r) => r.orders), borderColor: "#f4b942", backgroundColor: "#f4b942", yAxisID: "orders" },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: {
          revenue: { position: "left", beginAtZero: true },
          orders: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, ticks: { precision: 0 } },
        },
      },
    });
    return () => chart.destroy();
  }, [rows, currency]);
  const total = rows.reduce((sum, r) => sum + Number(r.netRevenue), 0);
  return (
    <div className="chart">
      <canvas
        ref={canvas}
        role="img"
        aria-label={`Net revenue and orders for ${rows.length} periods, ${total.toFixed(2)} ${currency} in all`}
      />
    </div>
  );
}
