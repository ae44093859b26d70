// Reports the compressed size of what the first page load fetches (the scripts
// and styles index.html names) and of every lazily loaded chunk, and fails when
// the first load's JavaScript passes the budget.
import { readdirSync, readFileSync } from "node:fs";
import { gzipSync, brotliCompressSync } from "node:zlib";

const BUDGET_GZIP_BYTES = 250 * 1024;
const dist = new URL("../dist/", import.meta.url).pathname;
const html = readFileSync(`${dist}index.html`, "utf8");
const firstLoad = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);

const sizes = (file) => {
  const body = readFileSync(`${dist}${file}`);
  return { raw: body.length, gzip: gzipSync(body, { level: 9 }).length, br: brotliCompressSync(body).length };
};
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
const rows = [];
let firstJsGzip = 0;
for (const file of firstLoad) {
  const s = sizes(file);
  if (file.endsWith(".js")) firstJsGzip += s.gzip;
  rows.push(["first load", file, s]);
}
for (const file of readdirSync(`${dist}assets`)) {
  const path = `assets/${file}`;
  if (!/\.(js|css)$/.test(file) || firstLoad.includes(path)) continue;
  rows.push(["on demand", path, sizes(path)]);
}
console.log("| loaded | file | raw | gzip | brotli |");
console.log("| --- | --- | ---: | ---: | ---: |");
for (const [when, file, s] of rows) {
  console.log(`| ${when} | ${file.replace(/-[\w-]{8}\./, ".")} | ${kb(s.raw)} | ${kb(s.gzip)} | ${kb(s.br)} |`);
}
console.log(`\nFirst-load JavaScript: ${kb(firstJsGzip)} gzip (budget ${kb(BUDGET_GZIP_BYTES)})`);
if (firstJsGzip > BUDGET_GZIP_BYTES) {
  console.error("over budget");
  process.exit(1);
}
