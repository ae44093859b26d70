import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The dev server sends API calls to a running `panthera run`, so `npm run dev`
// talks to the real platform.
const platform = process.env.PANTHERA_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  build: {
    // The page's CSP allows no inline script, so no inline preload polyfill.
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: false,
  },
  server: {
    port: 5173,
    proxy: {
      "/api": platform,
      "/media": platform,
      "/.well-known": platform,
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
