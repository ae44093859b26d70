// A real platform for the browser tests: `panthera run` on a free port, with its
// own scratch data directory, the demo catalog and an administrator.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, openSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(new URL("../../..", import.meta.url).pathname);
const panthera = process.env.PANTHERA_BIN ?? join(repo, ".venv", "bin", "panthera");

export const ADMIN = { email: "admin@example.com", password: "an admin passphrase for tests" };

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
    server.on("error", fail);
  });
}

function run(args, env) {
  const result = spawnSync(panthera, args, { env, encoding: "utf8" });
  if (result.status !== 0) {
    throw new Error(`panthera ${args.join(" ")} failed:\n${result.stdout}\n${result.stderr}`);
  }
}

export async function startPlatform({ products = 60 } = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = mkdtempSync(join(tmpdir(), "panthera-browser-"));
  const env = {
    ...process.env,
    PANTHERA_ENVIRONMENT: "test",
    PANTHERA_LOG_JSON: "false",
    PANTHERA_LOG_LEVEL: "WARNING",
    PANTHERA_DATA_DIR: dataDir,
    PANTHERA_WEB_DIR: join(repo, "web", "dist"),
    PANTHERA_PUBLIC_BASE_URL: base,
    // The web app's redirect URI is exact, port included.
    PANTHERA_OAUTH_CLIENTS: JSON.stringify({ "panthera-web": [`${base}/auth/callback`] }),
    // One browser signs in and out many times from one address.
    PANTHERA_LOGIN_ATTEMPTS_PER_ADDRESS: "1000",
    PANTHERA_RATE_LIMIT_PER_IP_BURST: "2000",
    PANTHERA_RATE_LIMIT_PER_IP_PER_MINUTE: "20000",
  };
  run(["seed", "--data-dir", dataDir, "--products", String(products)], env);
  run(["create-admin", "--data-dir", dataDir, "--email", ADMIN.email, "--password", ADMIN.password], env);
  const log = openSync(join(dataDir, "server.log"), "a");
  const server = spawn(panthera, ["run", "--port", String(port), "--data-dir", dataDir], {
    env,
    stdio: ["ignore", log, log],
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (server.exitCode !== null) throw new Error(`panthera run exited; see ${dataDir}/server.log`);
    try {
      const response = await fetch(`${base}/readyz`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`platform not ready; see ${dataDir}/server.log`);
    await new Promise((r) => setTimeout(r, 300));
  }
  return {
    base,
    dataDir,
    /** Stops the platform; its data (and server.log) stay only when asked to. */
    async stop({ keep = false } = {}) {
      server.kill("SIGTERM");
      await new Promise((r) => (server.exitCode !== null ? r() : server.once("exit", r)));
      if (keep) console.log(`Platform data and server.log kept in ${dataDir}`);
      else rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
