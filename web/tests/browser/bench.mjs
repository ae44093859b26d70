// Load time of the storefront on loopback: a cold load (new browser context, so
// an empty cache) of the home page and of a product page, repeated, in headless
// Chromium against a `panthera run` of its own. Prints a Markdown table.
//
//   node tests/browser/bench.mjs [runs]
import { chromium } from "playwright-core";
import { startPlatform } from "./platform.mjs";

const runs = Number(process.argv[2] ?? 10);
const platform = await startPlatform();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

async function measure(path, ready) {
  const context = await browser.newContext({ baseURL: platform.base });
  const page = await context.newPage();
  let scriptBytes = 0;
  page.on("response", async (response) => {
    if (response.request().resourceType() === "script") {
      const sizes = await response.request().sizes().catch(() => null);
      if (sizes) scriptBytes += sizes.responseBodySize + sizes.responseHeadersSize;
    }
  });
  const started = Date.now();
  await page.goto(path, { waitUntil: "load" });
  await page.locator(ready).first().waitFor();
  const ready_ms = Date.now() - started;
  const timing = await page.evaluate(() => {
    const [nav] = performance.getEntriesByType("navigation");
    const paint = performance.getEntriesByName("first-contentful-paint")[0];
    return { dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, fcp: paint?.startTime ?? NaN };
  });
  await context.close();
  return { ...timing, ready: ready_ms, scriptBytes };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const product = (await (await fetch(`${platform.base}/api/v1/products?limit=1`)).json())[0];
const pages = [
  ["home", "/", ".grid .card"],
  ["product list", "/products?sort=price", ".grid .card"],
  ["product", `/products/${product.productId}`, "button:has-text('Add to cart')"],
];
console.log(`| page | first contentful paint | DOMContentLoaded | load | content shown | JS transferred |`);
console.log(`| --- | ---: | ---: | ---: | ---: | ---: |`);
try {
  for (const [name, path, ready] of pages) {
    await measure(path, ready); // warm the server, not the browser
    const samples = [];
    for (let i = 0; i < runs; i += 1) samples.push(await measure(path, ready));
    const m = (key) => median(samples.map((s) => s[key]));
    console.log(
      `| ${name} | ${m("fcp").toFixed(0)} ms | ${m("dcl").toFixed(0)} ms | ${m("load").toFixed(0)} ms | ` +
        `${m("ready").toFixed(0)} ms | ${(m("scriptBytes") / 1024).toFixed(1)} KB |`,
    );
  }
} finally {
  await browser.close();
  await platform.stop();
}
console.log(`\nMedian of ${runs} cold loads each (new browser context, empty cache).`);
