import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, catalog, queryString, useTokens } from "./client";

afterEach(() => {
  vi.unstubAllGlobals();
  useTokens(null);
});

describe("api client", () => {
  it("leaves empty filters out of the query", () => {
    expect(queryString({ q: "lamp", category: "", inStock: false, featured: true, limit: 24, x: undefined }))
      .toBe("?q=lamp&featured=true&limit=24");
    expect(queryString({})).toBe("");
  });

  it("reads the total from X-Total-Count", async () => {
    vi.stubGlobal("fetch", async () =>
      new Response("[]", { headers: { "content-type": "application/json", "x-total-count": "1000" } }));
    expect(await catalog.products({ limit: 24 })).toEqual({ items: [], total: 1000 });
  });

  it("turns problem+json into an ApiError with its fields", async () => {
    vi.stubGlobal("fetch", async () =>
      new Response(
        JSON.stringify({
          type: "https://panthera.dev/problems/validation", title: "Invalid request", status: 400,
          detail: "price must be positive", code: "validation_error", requestId: "r-1",
          errors: [{ loc: ["body", "price"], msg: "must be positive" }],
        }),
        { status: 400, headers: { "content-type": "application/problem+json" } },
      ));
    const failure = await catalog.createProduct({ name: "x", price: "-1" }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ApiError);
    const problem = (failure as ApiError).problem;
    expect(problem).toMatchObject({ status: 400, code: "validation_error", detail: "price must be positive", requestId: "r-1" });
    expect((failure as ApiError).message).toBe("price must be positive");
  });

  it("says so when the platform cannot be reached", async () => {
    vi.stubGlobal("fetch", async () => {
      throw new TypeError("Failed to fetch");
    });
    const failure = (await catalog.categories().catch((e: unknown) => e)) as ApiError;
    expect(failure.problem.title).toBe("The shop cannot be reached");
  });
});
