import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { catalog } from "../api/client";
import { Session } from "./session";

const user = {
  id: "u1", email: "ada@example.com", firstName: "Ada", lastName: "Lovelace", phoneNumber: null,
  roles: ["USER"], emailVerified: true, createdAt: "", updatedAt: "",
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": status >= 400 ? "application/problem+json" : "application/json" },
  });
}

describe("session", () => {
  let calls: Array<{ url: string; init: RequestInit }>;
  let answers: Array<(url: string, init: RequestInit) => Response>;

  beforeEach(() => {
    localStorage.clear();
    sessionStorage.clear();
    calls = [];
    answers = [];
    vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
      calls.push({ url, init });
      const answer = answers.shift();
      if (!answer) throw new Error(`unexpected fetch ${url}`);
      return answer(url, init);
    });
  });
  afterEach(() => vi.unstubAllGlobals());

  it("sends the browser to /authorize with an S256 challenge and remembers the verifier", async () => {
    const assign = vi.fn();
    vi.stubGlobal("location", { ...window.location, origin: "http://shop.test", assign });
    await new Session().startSignIn("/checkout");
    const url = new URL(assign.mock.calls[0][0], "http://shop.test");
    expect(url.pathname).toBe("/api/v1/auth/authorize");
    expect(url.searchParams.get("client_id")).toBe("panthera-web");
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("redirect_uri")).toBe("http://shop.test/auth/callback");
    expect(url.searchParams.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const pending = JSON.parse(sessionStorage.getItem("panthera.pendingSignIn")!);
    expect(pending.state).toBe(url.searchParams.get("state"));
    expect(pending.returnTo).toBe("/checkout");
  });

  it("refuses a callback whose state is not the one it sent", async () => {
    sessionStorage.setItem("panthera.pendingSignIn", JSON.stringify({ verifier: "v", state: "mine", returnTo: "/" }));
    await expect(new Session().completeSignIn("code", "someone-else")).rejects.toThrow(/Start signing in again/);
    expect(calls).toHaveLength(0);
  });

  it("redeems the code with the verifier, keeps the access token out of storage", async () => {
    sessionStorage.setItem("panthera.pendingSignIn", JSON.stringify({ verifier: "the-verifier", state: "s", returnTo: "/orders" }));
    answers.push(() => json({ access_token: "at-1", refresh_token: "rt-1", expires_in: 900 }));
    answers.push(() => json(user));
    const session = new Session();
    expect(await session.completeSignIn("the-code", "s")).toBe("/orders");
    const form = new URLSearchParams(String(calls[0].init.body));
    expect(form.get("grant_type")).toBe("authorization_code");
    expect(form.get("code_verifier")).toBe("the-verifier");
    expect((calls[1].init.headers as Record<string, string>).Authorization).toBe("Bearer at-1");
    expect(localStorage.getItem("panthera.refreshToken")).toBe("rt-1");
    expect(JSON.stringify({ ...localStorage })).not.toContain("at-1");
    expect(session.state).toEqual({ status: "signed-in", user });
  });

  it("rotates the refresh token when the access token is refused, then retries once", async () => {
    localStorage.setItem("panthera.refreshToken", "rt-1");
    // Constructing a session makes it the API client's token source.
    new Session();
    answers.push(() => json({ access_token: "at-1", refresh_token: "rt-2", expires_in: 900 }));
    answers.push(() => json({ type: "about:blank", title: "Unauthenticated", status: 401 }, 401));
    answers.push(() => json({ access_token: "at-2", refresh_token: "rt-3", expires_in: 900 }));
    answers.push(() => json([]));
    await catalog.products({});
    expect(localStorage.getItem("panthera.refreshToken")).toBe("rt-3");
    expect((calls[3].init.headers as Record<string, string>).Authorization).toBe("Bearer at-2");
  });

  it("forgets a refresh token the platform refused", async () => {
    localStorage.setItem("panthera.refreshToken", "rt-old");
    answers.push(() => json({ error: "invalid_grant", error_description: "The refresh token is invalid." }, 400));
    const session = new Session();
    await session.restore();
    expect(localStorage.getItem("panthera.refreshToken")).toBeNull();
    expect(session.state).toEqual({ status: "anonymous" });
  });

  it("starts signed out, token kept, when the platform cannot be reached", async () => {
    localStorage.setItem("panthera.refreshToken", "rt-1");
    answers.push(() => {
      throw new TypeError("Failed to fetch");
    });
    const session = new Session();
    await session.restore();
    expect(session.state).toEqual({ status: "anonymous" });
    expect(localStorage.getItem("panthera.refreshToken")).toBe("rt-1");
  });

  it("signs out by revoking the refresh token", async () => {
    localStorage.setItem("panthera.refreshToken", "rt-1");
    answers.push(() => new Response(null, { status: 204 }));
    const session = new Session();
    await session.signOut();
    expect(calls[0].url).toBe("/api/v1/auth/logout");
    expect(JSON.parse(String(calls[0].init.body))).toEqual({ refreshToken: "rt-1" });
    expect(localStorage.getItem("panthera.refreshToken")).toBeNull();
    expect(session.state).toEqual({ status: "anonymous" });
  });
});
