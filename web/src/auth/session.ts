// Signing in through the platform's OAuth 2.0 authorization code flow with PKCE.
//
// The access token lives in memory only, so a script injected into some other
// page of this origin finds nothing in storage to steal for later use. The refresh
// token must outlive a reload, so it is kept in localStorage; the server rotates it
// on every use and revokes the whole sign-in when an old one is replayed. Tabs
// share it, so refreshing happens under a Web Lock: two tabs never spend the same
// token (which would look like a replay and sign both out).
import { ApiError, oauth, users, useTokens, type OAuthTokens } from "../api/client";
import type { User } from "../api/types";
import { challengeFor, randomToken } from "./pkce";

export const CLIENT_ID = "panthera-web";
const REFRESH_KEY = "panthera.refreshToken";
const PENDING_KEY = "panthera.pendingSignIn";
// Refresh this long before the access token expires, so requests never race it.
const EARLY_MS = 60_000;

export type SessionState =
  | { status: "loading" }
  | { status: "anonymous" }
  | { status: "signed-in"; user: User };

interface PendingSignIn {
  verifier: string;
  state: string;
  returnTo: string;
}

export function redirectUri(): string {
  return `${window.location.origin}/auth/callback`;
}

export class Session {
  private access: string | null = null;
  private expiresAt = 0;
  private refreshing: Promise<string | null> | null = null;
  private listeners = new Set<() => void>();
  state: SessionState = { status: "loading" };

  constructor() {
    useTokens({
      accessToken: () => this.accessToken(),
      refreshed: () => this.refresh(),
    });
    window.addEventListener("storage", (event) => {
      if (event.key !== REFRESH_KEY) return;
      // Signed out in another tab: this one follows; signed in there: so is this one.
      if (event.newValue === null && this.state.status !== "anonymous") this.forget();
      else if (event.newValue !== null && this.state.status === "anonymous") void this.restore();
    });
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  snapshot = (): SessionState => this.state;

  private set(state: SessionState): void {
    this.state = state;
    for (const listener of this.listeners) listener();
  }

  get user(): User | null {
    return this.state.status === "signed-in" ? this.state.user : null;
  }

  /** Sends the browser to the platform's sign-in page. */
  async startSignIn(returnTo = "/"): Promise<void> {
    const pending: PendingSignIn = { verifier: randomToken(), state: randomToken(16), returnTo };
    sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    const params = new URLSearchParams({
      response_type: "code",
      client_id: CLIENT_ID,
      redirect_uri: redirectUri(),
      code_challenge: await challengeFor(pending.verifier),
      code_challenge_method: "S256",
      state: pending.state,
    });
    window.location.assign(`${oauth.authorizeUrl}?${params}`);
  }

  /** Redeems the code the platform sent back; answers where to go next. */
  async completeSignIn(code: string, state: string): Promise<string> {
    const raw = sessionStorage.getItem(PENDING_KEY);
    sessionStorage.removeItem(PENDING_KEY);
    const pending = raw ? (JSON.parse(raw) as PendingSignIn) : null;
    if (!pending || pending.state !== state) {
      throw new ApiError({
        type: "about:blank",
        title: "This sign-in link is not from this browser",
        detail: "Start signing in again from the shop.",
        status: 400,
      });
    }
    const tokens = await oauth.exchangeCode({
      code,
      client_id: CLIENT_ID,
      redirect_uri: redirectUri(),
      code_verifier: pending.verifier,
    });
    this.keep(tokens);
    await this.loadUser();
    return pending.returnTo.startsWith("/") ? pending.returnTo : "/";
  }

  /** On start: a stored refresh token signs this tab in again. */
  async restore(): Promise<void> {
    if (!localStorage.getItem(REFRESH_KEY)) {
      this.set({ status: "anonymous" });
      return;
    }
    try {
      const token = await this.refresh();
      if (token) await this.loadUser();
    } catch {
      // The platform could not be reached: shop signed out for now, and keep the
      // refresh token, which the next request that needs it will try again.
      this.set({ status: "anonymous" });
    }
  }

  async loadUser(): Promise<void> {
    try {
      this.set({ status: "signed-in", user: await users.me() });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.forget();
      else throw error;
    }
  }

  async accessToken(): Promise<string | null> {
    if (this.access && Date.now() < this.expiresAt - EARLY_MS) return this.access;
    if (!localStorage.getItem(REFRESH_KEY)) return null;
    return this.refresh();
  }

  /** A new access token from the stored refresh token, which is rotated. */
  refresh(): Promise<string | null> {
    this.refreshing ??= this.refreshUnderLock().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async refreshUnderLock(): Promise<string | null> {
    const spend = async (): Promise<string | null> => {
      // Read inside the lock: another tab may have rotated it a moment ago.
      const refreshToken = localStorage.getItem(REFRESH_KEY);
      if (!refreshToken) {
        this.forget();
        return null;
      }
      try {
        const tokens = await oauth.refresh({ client_id: CLIENT_ID, refresh_token: refreshToken });
        this.keep(tokens);
        return tokens.access_token;
      } catch (error) {
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
          this.forget();
          return null;
        }
        throw error;
      }
    };
    if (typeof navigator !== "undefined" && navigator.locks) {
      return navigator.locks.request("panthera.refresh", spend);
    }
    return spend();
  }

  async signOut(): Promise<void> {
    const refreshToken = localStorage.getItem(REFRESH_KEY);
    const access = Date.now() < this.expiresAt ? this.access : null;
    this.forget();
    if (refreshToken) {
      try {
        await oauth.logout(refreshToken, access);
      } catch {
        // Signed out here regardless; the token dies with its lifetime.
      }
    }
  }

  private keep(tokens: OAuthTokens): void {
    this.access = tokens.access_token;
    this.expiresAt = Date.now() + tokens.expires_in * 1000;
    localStorage.setItem(REFRESH_KEY, tokens.refresh_token);
  }

  private forget(): void {
    this.access = null;
    this.expiresAt = 0;
    localStorage.removeItem(REFRESH_KEY);
    this.set({ status: "anonymous" });
  }
}
