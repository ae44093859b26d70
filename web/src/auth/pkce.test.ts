import { describe, expect, it } from "vitest";
import { base64url, challengeFor, randomToken } from "./pkce";

describe("PKCE", () => {
  it("derives the RFC 7636 appendix B challenge", async () => {
    const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    expect(await challengeFor(verifier)).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  });

  it("makes verifiers of 43 url-safe characters", () => {
    const verifier = randomToken();
    expect(verifier).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(randomToken()).not.toBe(verifier);
  });

  it("encodes without padding", () => {
    expect(base64url(new Uint8Array([251, 255]))).toBe("-_8");
  });
});
