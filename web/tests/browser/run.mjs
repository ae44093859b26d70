// Browser tests: Debian's Chromium, headless, driven by Playwright against a real
// `panthera run` (started here unless PANTHERA_E2E_URL names one that is running).
// Every page visited is kept as a screenshot under test-results/screenshots/.
//
//   node tests/browser/run.mjs [name-filter[|another]]
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { chromium } from "playwright-core";
import { ADMIN, startPlatform } from "./platform.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = new URL("../../test-results/screenshots/", import.meta.url).pathname;
const filter = process.argv[2] ?? "";
const PASSWORD = "correct horse battery staple";

rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });

const platform = process.env.PANTHERA_E2E_URL
  ? { base: process.env.PANTHERA_E2E_URL, stop: async () => {} }
  : await startPlatform();
const base = platform.base;
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

let shot = 0;
const tests = [];
const test = (name, body) => tests.push({ name, body });

class Expectation extends Error {}
function expect(condition, message) {
  if (!condition) throw new Expectation(message);
}

/** A fresh browser context whose page fails the test on any console error. */
async function open(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, baseURL: base });
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(message.text());
  });
  page.on("pageerror", (error) => page.errors.push(String(error)));
  // API refusals are part of the tests (and shown to the user); any other failed
  // file (a script, a style, a picture) is a fault of the app.
  page.on("response", (response) => {
    const url = new URL(response.url());
    if (response.status() >= 400 && url.origin === base && !url.pathname.startsWith("/api/")) {
      page.errors.push(`${response.status()} ${url.pathname}`);
    }
  });
  page.setDefaultTimeout(15_000);
  return { context, page };
}

async function snap(page, name) {
  shot += 1;
  await page.screenshot({ path: `${SHOTS}${String(shot).padStart(2, "0")}-${name}.png`, fullPage: true });
}

// Chromium logs every refused fetch as a console error; the API's refusals are let
// through here (the response listener above catches every other failed file).
function appErrors(page, allowed = []) {
  return page.errors.filter(
    (text) => !/Failed to load resource: the server responded with a status of/.test(text) &&
      !allowed.some((pattern) => pattern.test(text)),
  );
}

async function signIn(page, email, password) {
  await page.getByRole("button", { name: "Sign in" }).first().click();
  await page.waitForURL(/\/api\/v1\/auth\/authorize/);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await snap(page, "authorize-page");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
}

async function register(email) {
  const response = await fetch(`${base}/api/v1/users/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD, firstName: "Grace", lastName: "Hopper" }),
  });
  expect(response.status === 201, `register answered ${response.status}`);
}

const unique = (prefix) => `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}@example.com`;

async function firstProduct(query = "") {
  // Demo products all have pictures; ones the tests created may not.
  const response = await fetch(`${base}/api/v1/products?inStock=true&sort=name&limit=20${query}`);
  const products = await response.json();
  return products.find((product) => product.imageUrl) ?? products[0];
}

async function ordersAvailable() {
  const response = await fetch(`${base}/api/v1/orders/00000000-0000-0000-0000-000000000000`);
  const body = await response.json().catch(() => ({}));
  // Without the orders service the gateway has no route: 404 with instance only.
  return !(response.status === 404 && body.code === "not_found" && !body.detail);
}

// --- Storefront -------------------------------------------------------------------

test("home shows categories and featured products", async () => {
  const { context, page } = await open();
  await page.goto("/");
  await page.getByRole("heading", { name: "Welcome to Panthera" }).waitFor();
  await page.getByRole("heading", { name: "Categories" }).waitFor();
  await page.locator(".chips a").first().waitFor();
  await page.locator(".grid .card").first().waitFor();
  await snap(page, "home");
  // Keyboard: the first Tab lands on the skip link, which is then visible.
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  expect(focused === "Skip to content", `first tab focused ${focused}`);
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("search, filters, sort and paging live in the URL and the back button", async () => {
  const { context, page } = await open();
  const product = await firstProduct();
  const word = product.name.split(" ").at(-1);
  await page.goto("/");
  await page.getByLabel("Search products").fill(word);
  await page.getByLabel("Search products").press("Enter");
  await page.waitForURL(new RegExp(`/products\\?q=${word}`));
  await page.getByText(new RegExp(`\\d+ products?`)).waitFor();
  await page.locator(".card-name", { hasText: word }).first().waitFor();
  await snap(page, "search-results");
  await page.getByLabel("Sort by").selectOption("-price");
  await page.getByLabel("In stock only").check();
  await page.getByRole("button", { name: "Apply" }).click();
  await page.waitForURL(/sort=-price/);
  expect(page.url().includes("inStock=true"), `filters not in ${page.url()}`);
  await page.getByText(/\d+ products?/).waitFor();
  const prices = await page.locator(".card .price").allTextContents();
  const numbers = prices.map((p) => Number(p.replace(/[^0-9.]/g, "")));
  expect(numbers.every((n, i) => i === 0 || numbers[i - 1] >= n), `not sorted: ${prices}`);
  // A shared link opens the same list; paging moves the URL on.
  await page.goto("/products?sort=price");
  await page.getByRole("button", { name: "Next →" }).click();
  await page.waitForURL(/page=2/);
  await page.getByText("Page 2 of").waitFor();
  await snap(page, "products-page-2");
  await page.goBack();
  await page.waitForURL((url) => !url.search.includes("page=2"));
  await page.getByText("Page 1 of").waitFor();
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("product page with gallery, variants and stock fills a cart that survives a reload", async () => {
  const { context, page } = await open();
  const response = await fetch(`${base}/api/v1/products?category=clothing&inStock=true&limit=1`);
  const [product] = await response.json();
  await page.goto(`/products/${product.productId}`);
  await page.getByRole("heading", { name: product.name }).waitFor();
  await page.locator("img.gallery-main").waitFor();
  const stock = await page.locator(".buy .stock").textContent();
  expect(/stock|left/i.test(stock), `no stock shown: ${stock}`);
  const options = await page.locator(".buy select").count();
  if (options > 0) {
    const select = page.locator(".buy select").first();
    const values = await select.locator("option").allTextContents();
    await select.selectOption(values.at(-1));
  }
  await snap(page, "product");
  await page.getByLabel("Quantity", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.getByText("Added to your cart").waitFor();
  await page.getByRole("link", { name: /Cart/ }).click();
  await page.getByRole("heading", { name: "Your cart" }).waitFor();
  await page.reload();
  await page.getByRole("link", { name: product.name }).waitFor();
  const quantity = await page.locator("input.qty").inputValue();
  expect(quantity === "2", `quantity after reload ${quantity}`);
  await snap(page, "cart");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("phone width: home, list and product fit the screen", async () => {
  const { context, page } = await open({ width: 390, height: 844 });
  for (const [path, name] of [["/", "phone-home"], ["/products", "phone-products"]]) {
    await page.goto(path);
    await page.locator(".grid .card").first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow <= 1, `${path} scrolls sideways by ${overflow}px`);
    await snap(page, name);
  }
  const product = await firstProduct();
  await page.goto(`/products/${product.productId}`);
  await page.getByRole("button", { name: "Add to cart" }).waitFor();
  await snap(page, "phone-product");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

// --- Accounts ---------------------------------------------------------------------

test("sign up, sign in with PKCE, see the account, sign out revokes", async () => {
  const { context, page } = await open();
  const email = unique("shopper");
  await page.goto("/signup");
  await page.getByLabel("First name").fill("Grace");
  await page.getByLabel("Last name").fill("Hopper");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel(/^Password/).fill(PASSWORD);
  await snap(page, "signup");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Check your mail" }).waitFor();
  await snap(page, "signup-done");
  await page.goto("/account");
  await signIn(page, email, PASSWORD);
  await page.getByRole("heading", { name: "Your account" }).waitFor();
  await page.getByText(email).waitFor();
  await snap(page, "account");
  // The access token is in memory only; the refresh token is what a reload uses.
  const stored = await page.evaluate(() => Object.keys(localStorage));
  expect(!stored.some((key) => /access/i.test(key)), `access token stored: ${stored}`);
  await page.reload();
  await page.getByText(email).waitFor();
  const refreshToken = await page.evaluate(() => localStorage.getItem("panthera.refreshToken"));
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("navigation", { name: "Main" }).getByRole("button", { name: "Sign in" }).waitFor();
  const reuse = await fetch(`${base}/api/v1/auth/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "refresh_token", client_id: "panthera-web", refresh_token: refreshToken }),
  });
  expect(reuse.status === 400 || reuse.status === 401, `revoked refresh token answered ${reuse.status}`);
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("a wrong password is said plainly and a bad profile edit shows the problem", async () => {
  const { context, page } = await open();
  const email = unique("profile");
  await register(email);
  await page.goto("/account");
  await page.getByRole("button", { name: "Sign in" }).first().click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Wrong email or password.").waitFor();
  await snap(page, "authorize-wrong-password");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Your account" }).waitFor();
  await page.getByLabel("First name").fill("Ada");
  await page.getByRole("button", { name: "Save profile" }).click();
  await page.getByText("Profile saved.").waitFor();
  await page.getByLabel("Current password").fill("wrong current password");
  await page.getByLabel(/^New password/).fill("another long passphrase");
  await page.getByRole("button", { name: "Change password" }).click();
  await page.locator(".problem").getByText("The password was not changed").waitFor();
  await snap(page, "account-problem");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("password reset and email verification pages", async () => {
  const { context, page } = await open();
  await page.goto("/account/reset-password");
  await page.getByLabel("Email").fill(unique("forgetful"));
  await page.getByRole("button", { name: "Send reset link" }).click();
  await page.getByText(/a reset link is on its way/).waitFor();
  await snap(page, "password-reset");
  await page.goto("/account/verify-email?token=not-a-real-token-at-all");
  await page.locator(".problem").waitFor();
  await snap(page, "verify-email-bad-token");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

// --- Admin console ----------------------------------------------------------------

async function adminToken() {
  const response = await fetch(`${base}/api/v1/users/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(ADMIN),
  });
  return (await response.json()).accessToken;
}

async function adminPage() {
  const opened = await open();
  await opened.page.goto("/admin");
  await signIn(opened.page, ADMIN.email, ADMIN.password);
  await opened.page.getByRole("heading", { name: "Products" }).waitFor();
  return opened;
}

test("admin creates a product, uploads an image and adjusts stock with a reason", async () => {
  const { context, page } = await adminPage();
  await snap(page, "admin-products");
  await page.getByRole("link", { name: "New product" }).click();
  const name = `Test Lantern ${Date.now()}`;
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Description").fill("A lantern made by the browser tests.");
  await page.getByLabel("Category").selectOption({ index: 1 });
  await page.getByLabel("Price").fill("24.50");
  await page.getByLabel("Initial stock").fill("5");
  await snap(page, "admin-new-product");
  await page.getByRole("button", { name: "Create product" }).click();
  await page.getByRole("heading", { name: `Edit ${name}` }).waitFor();
  // A real picture: one the demo catalog already serves.
  const sample = await firstProduct();
  const picture = Buffer.from(await (await fetch(`${base}${sample.imageUrl}`)).arrayBuffer());
  await page.getByLabel(/Image file/).setInputFiles({ name: "lantern.webp", mimeType: "image/webp", buffer: picture });
  await page.getByLabel("Description for screen readers").fill("The lantern, lit");
  await page.getByRole("button", { name: "Upload image" }).click();
  await page.locator(".image-list img").first().waitFor();
  await page.getByLabel(/Image file/).setInputFiles({ name: "lantern-side.webp", mimeType: "image/webp", buffer: picture });
  await page.getByLabel("Description for screen readers").fill("The lantern, from the side");
  await page.getByRole("button", { name: "Upload image" }).click();
  await page.locator(".image-list img").nth(1).waitFor();
  await page.locator("details.adjuster summary").first().click();
  await page.getByLabel(/^Change/).first().fill("7");
  await page.getByLabel("Reason").first().fill("delivery from supplier");
  await page.getByRole("button", { name: "Adjust stock" }).first().click();
  await page.locator("td[data-testid^='available-']", { hasText: /^12$/ }).waitFor();
  await page.getByRole("button", { name: "Show stock history" }).first().click();
  await page.getByRole("cell", { name: "delivery from supplier" }).waitFor();
  await page.getByLabel("Price of this variant").first().fill("26.00");
  await page.getByRole("button", { name: "Save price" }).first().click();
  await page.getByRole("cell", { name: "26.00", exact: true }).waitFor();
  await snap(page, "admin-product-edited");
  // A refused change shows the platform's problem, not a blank.
  await page.getByLabel(/^Change/).first().fill("-1000");
  await page.getByLabel("Reason").first().fill("too much");
  await page.getByRole("button", { name: "Adjust stock" }).first().click();
  await page.locator(".problem").getByText("The variant was not changed").waitFor();
  await snap(page, "admin-stock-refused");
  // The shop shows it, with its picture.
  await page.getByRole("link", { name: "View in shop" }).click();
  await page.getByRole("heading", { name }).waitFor();
  await page.locator("img.gallery-main[alt='The lantern, lit']").waitFor();
  await page.getByRole("button", { name: "Show picture 2 of 2" }).click();
  await page.locator("img.gallery-main[alt='The lantern, from the side']").waitFor();
  await snap(page, "admin-product-in-shop");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("admin manages categories, user roles and reads the notification log", async () => {
  const email = unique("staffer");
  await register(email);
  const { context, page } = await adminPage();
  await page.getByRole("link", { name: "Categories" }).click();
  const category = `Lanterns ${Date.now()}`;
  await page.getByLabel("New category name").fill(category);
  await page.getByRole("button", { name: "Add category" }).click();
  await page.getByRole("button", { name: `Rename ${category}` }).waitFor();
  await snap(page, "admin-categories");
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByRole("heading", { name: "Users" }).waitFor();
  const row = page.getByRole("row").filter({ hasText: email });
  await row.waitFor();
  const saved = page.waitForResponse((r) => r.url().includes("/roles") && r.ok());
  await row.getByRole("checkbox", { name: "MODERATOR" }).check();
  await saved;
  const roles = await fetch(`${base}/api/v1/users/profiles?limit=100`, {
    headers: { Authorization: `Bearer ${await adminToken()}` },
  }).then((r) => r.json());
  const changed = roles.find((user) => user.email === email);
  expect(changed?.roles.includes("MODERATOR"), `roles now ${changed?.roles}`);
  await snap(page, "admin-users");
  await page.getByRole("link", { name: "Notifications" }).click();
  await page.getByRole("heading", { name: "Notification log" }).waitFor();
  await page.getByRole("cell", { name: email }).first().waitFor();
  await snap(page, "admin-notifications");
  // Orders and sales: the figures, or the platform's problem said plainly while
  // those services are not there.
  for (const [link, heading, name] of [["Orders", "Orders", "admin-orders"], ["Analytics", "Sales", "admin-analytics"]]) {
    await page.getByRole("navigation", { name: "Admin" }).getByRole("link", { name: link }).click();
    await page.getByRole("heading", { name: heading, exact: true }).waitFor();
    await page.locator(".problem, .order-admin-list, .table, p:has-text('No orders.'), p:has-text('No confirmed orders')").first().waitFor();
    await snap(page, name);
  }
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("a shopper's notification choices are saved and still there after a reload", async () => {
  const email = unique("chooser");
  await register(email);
  const { context, page } = await open();
  await page.goto("/account");
  await signIn(page, email, PASSWORD);
  await page.getByRole("heading", { name: "Notifications" }).waitFor();
  // The notifications service learns of a new account from its event.
  for (let i = 0; i < 20 && !(await page.getByLabel("News and offers by email").isVisible()); i += 1) {
    await new Promise((r) => setTimeout(r, 500));
    await page.reload();
    await page.getByRole("heading", { name: "Notifications" }).waitFor();
  }
  const marketing = page.getByLabel("News and offers by email");
  const push = page.getByLabel("Order updates as push notifications");
  const wasMarketing = await marketing.isChecked();
  const wasPush = await push.isChecked();
  expect(await page.getByLabel(/Order updates by text message/).isDisabled(), "text messages offered without a phone number");
  for (const [box, was] of [[marketing, wasMarketing], [push, wasPush]]) {
    const saved = page.waitForResponse((r) => r.url().includes("/notifications/preferences/") && r.request().method() === "PUT");
    await box.setChecked(!was);
    const answer = await saved;
    expect(answer.ok(), `preferences answered ${answer.status()}`);
  }
  await snap(page, "account-notifications-changed");
  await page.reload();
  await page.getByLabel("News and offers by email").waitFor();
  expect((await marketing.isChecked()) === !wasMarketing, "the email choice did not persist");
  expect((await push.isChecked()) === !wasPush, "the push choice did not persist");
  await snap(page, "account-notifications-reloaded");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("staff resend a message from the notification log", async () => {
  const email = unique("resend");
  await register(email);
  const { context, page } = await adminPage();
  await page.getByRole("link", { name: "Notifications" }).click();
  await page.getByRole("heading", { name: "Notification log" }).waitFor();
  const row = page.getByRole("row").filter({ has: page.getByRole("cell", { name: email, exact: true }) }).first();
  // The confirmation mail is sent a moment after the account is made.
  for (let i = 0; i < 20 && !(await row.getByRole("button", { name: /^Resend/ }).isVisible()); i += 1) {
    await new Promise((r) => setTimeout(r, 500));
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.getByRole("heading", { name: "Notification log" }).waitFor();
  }
  const resent = page.waitForResponse((r) => r.url().endsWith("/resend") && r.request().method() === "POST");
  await row.getByRole("button", { name: /^Resend/ }).click();
  const answer = await resent;
  expect(answer.status() === 202, `resend answered ${answer.status()}`);
  const delivery = await answer.json();
  await snap(page, "admin-notification-resent");
  // Sent again: the log shows it sent, with one more attempt made afresh.
  const token = await adminToken();
  let again;
  for (let i = 0; i < 40; i += 1) {
    const list = await fetch(`${base}/api/v1/notifications/deliveries?limit=200`, { headers: { Authorization: `Bearer ${token}` } })
      .then((r) => r.json());
    again = list.find((d) => d.id === delivery.id);
    if (again?.status === "sent") break;
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(again?.status === "sent", `after resending the message is ${again?.status}`);
  expect(again.sentAt > delivery.createdAt, "sent time not updated");
  await page.getByRole("button", { name: "Refresh" }).click();
  await row.locator(".status-sent").waitFor();
  expect(await row.getByRole("button", { name: /^Resend/ }).isEnabled(), "a message sent again cannot be resent");
  await snap(page, "admin-notification-log-after-resend");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

// --- Orders -----------------------------------------------------------------------

async function checkoutWith(card, expected) {
  const { context, page } = await open();
  const email = unique("buyer");
  await register(email);
  const product = await firstProduct();
  await page.goto(`/products/${product.productId}`);
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.goto("/cart");
  await page.getByRole("button", { name: "Sign in to check out" }).click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Checkout" }).waitFor();
  await page.getByLabel("Full name").fill("Grace Hopper");
  await page.getByLabel("Street and number").fill("1 Navy Yard");
  await page.getByLabel("Postal code").fill("20374");
  await page.getByLabel("City").fill("Washington");
  await page.getByLabel("Country").fill("USA");
  await page.getByLabel(card).check();
  await snap(page, `checkout-${expected.toLowerCase()}`);
  await page.getByRole("button", { name: "Place order" }).click();
  await page.locator(`.status-${expected.toLowerCase()}`).first().waitFor({ timeout: 30_000 });
  await snap(page, `order-${expected.toLowerCase()}`);
  return { context, page };
}

async function salesToday(token) {
  const today = new Date().toISOString().slice(0, 10);
  const report = await fetch(`${base}/api/v1/analytics/sales?from=${today}&to=${today}`, {
    headers: { Authorization: `Bearer ${token}` },
  }).then((r) => r.json());
  return report.rows.filter((row) => row.currency === "USD").reduce((sum, row) => sum + Number(row.grossRevenue), 0);
}

test("the sales dashboard shows a confirmed purchase, draws the chart and exports CSV", async () => {
  if (!(await ordersAvailable())) return "skip";
  const token = await adminToken();
  const before = await salesToday(token);
  const buyer = await checkoutWith("Visa ending 4242 (succeeds)", "CONFIRMED");
  const orderId = new URL(buyer.page.url()).pathname.split("/").at(-1);
  await buyer.context.close();
  const order = await fetch(`${base}/api/v1/orders/${orderId}`, { headers: { Authorization: `Bearer ${token}` } })
    .then((r) => r.json());
  const expected = Math.round((before + Number(order.totalAmount)) * 100) / 100;
  // The reports read the platform's events a moment after they happen.
  let gross = before;
  for (let i = 0; i < 80 && Math.abs(gross - expected) > 0.001; i += 1) {
    await new Promise((r) => setTimeout(r, 250));
    gross = await salesToday(token);
  }
  expect(Math.abs(gross - expected) < 0.001, `sales report has ${gross}, expected ${expected}`);
  const { context, page } = await adminPage();
  await page.getByRole("navigation", { name: "Admin" }).getByRole("link", { name: "Analytics" }).click();
  await page.getByRole("heading", { name: "Sales", exact: true }).waitFor();
  const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" }).format(expected);
  const today = new Date().toISOString().slice(0, 10);
  const row = page.getByRole("row").filter({ has: page.getByRole("cell", { name: today, exact: true }) });
  await row.getByRole("cell", { name: money, exact: true }).first().waitFor();
  const chart = page.locator(".chart canvas");
  await chart.waitFor();
  const box = await chart.boundingBox();
  expect(box && box.width > 100 && box.height > 100, `chart is ${JSON.stringify(box)}`);
  const label = await chart.getAttribute("aria-label");
  expect(/Net revenue and orders for \d+ periods/.test(label ?? ""), `chart label: ${label}`);
  await page.getByRole("cell", { name: order.items?.[0]?.name ?? "", exact: true }).first().waitFor();
  await snap(page, "admin-sales-dashboard");
  for (const [button, header] of [
    ["Sales as CSV", "period,currency,grossRevenue,refunded,netRevenue,orders,units,refunds,averageOrderValue"],
    ["Top products as CSV", "productId,name,categoryId,currency,units,revenue"],
  ]) {
    const downloading = page.waitForEvent("download");
    await page.getByRole("button", { name: button }).click();
    const download = await downloading;
    const text = readFileSync(await download.path(), "utf8");
    const [first, second] = text.split(/\r?\n/);
    expect(first === header, `${button}: header ${JSON.stringify(first)}`);
    expect(second && second.length > 0, `${button}: no rows in ${JSON.stringify(text)}`);
    expect(download.suggestedFilename().endsWith(".csv"), `${button}: saved as ${download.suggestedFilename()}`);
  }
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("purchase journey: checkout with a test card, the order becomes CONFIRMED and is in the history", async () => {
  if (!(await ordersAvailable())) return "skip";
  const { context, page } = await checkoutWith("Visa ending 4242 (succeeds)", "CONFIRMED");
  await page.getByText("Your order is confirmed").waitFor();
  await page.getByRole("link", { name: "Cart 0 items" }).waitFor();
  await page.getByRole("link", { name: "All your orders" }).click();
  await page.locator(".status-confirmed").first().waitFor();
  await snap(page, "order-history");
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("a declined card cancels the order and keeps the cart", async () => {
  if (!(await ordersAvailable())) return "skip";
  const { context, page } = await checkoutWith("Card declined", "CANCELLED");
  await page.getByText("Your cart still holds the items").waitFor();
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

test("staff ship and refund a confirmed order", async () => {
  if (!(await ordersAvailable())) return "skip";
  const buyer = await checkoutWith("Visa ending 4242 (succeeds)", "CONFIRMED");
  const orderId = new URL(buyer.page.url()).pathname.split("/").at(-1);
  await buyer.context.close();
  const { context, page } = await adminPage();
  await page.getByRole("navigation", { name: "Admin" }).getByRole("link", { name: "Orders" }).click();
  await page.getByLabel("Status").selectOption("CONFIRMED");
  const row = page.locator(".order-admin").filter({ has: page.getByRole("link", { name: orderId.slice(0, 8) }) });
  await row.getByRole("button", { name: "Ship" }).click();
  await row.getByLabel("Carrier").fill("DHL");
  await row.getByLabel("Tracking number").fill("JD0146000033");
  await snap(page, "admin-order-ship");
  await row.getByRole("button", { name: "Mark shipped" }).click();
  await page.getByLabel("Status").selectOption("SHIPPED");
  await row.locator(".status-shipped").waitFor();
  await row.getByRole("button", { name: "Refund" }).click();
  await row.getByLabel(/Amount/).fill("1.00");
  await row.getByLabel("Reason").fill("damaged in transit");
  const refunded = page.waitForResponse((r) => r.url().endsWith("/refund") && r.request().method() === "POST");
  await row.getByRole("button", { name: "Refund" }).last().click();
  const answer = await refunded;
  expect(answer.ok(), `refund answered ${answer.status()}`);
  await row.getByLabel("Reason").waitFor({ state: "detached" });
  await snap(page, "admin-order-refunded");
  // The provider confirms the refund a moment later.
  const token = await adminToken();
  let order;
  for (let i = 0; i < 40; i += 1) {
    order = await fetch(`${base}/api/v1/orders/${orderId}`, { headers: { Authorization: `Bearer ${token}` } })
      .then((r) => r.json());
    if (order.amountRefunded === "1.00") break;
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(order.trackingNumber === "JD0146000033", `tracking ${order.trackingNumber}`);
  expect(order.amountRefunded === "1.00", `refunded ${order.amountRefunded}`);
  expect(appErrors(page).length === 0, `console errors: ${page.errors}`);
  await context.close();
});

// --- Runner -----------------------------------------------------------------------

let passed = 0;
let failed = 0;
let skipped = 0;
try {
  for (const { name, body } of tests) {
    if (filter && !filter.split("|").some((part) => name.includes(part))) continue;
    const started = Date.now();
    try {
      const outcome = await body();
      if (outcome === "skip") {
        skipped += 1;
        console.log(`SKIP ${name} (the orders API is not on this platform yet)`);
      } else {
        passed += 1;
        console.log(`PASS ${name} (${Date.now() - started} ms)`);
      }
    } catch (error) {
      failed += 1;
      console.log(`FAIL ${name}\n  ${String(error?.stack ?? error).split("\n").slice(0, 6).join("\n  ")}`);
    }
  }
} finally {
  await browser.close();
  await platform.stop({ keep: failed > 0 });
}
console.log(`\nScreenshots: ${SHOTS}`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
