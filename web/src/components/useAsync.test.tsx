import { act, cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { useAsync } from "./useAsync";

afterEach(cleanup);

function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function Probe({ query, calls }: { query: string; calls: Map<string, ReturnType<typeof deferred<string>>> }) {
  const state = useAsync(() => {
    const call = deferred<string>();
    calls.set(query, call);
    return call.promise;
  }, [query]);
  return <p>{state.loading ? "loading" : `${query}: ${state.data}`}</p>;
}

describe("useAsync", () => {
  it("never shows an old answer under new deps, and drops answers that come late", async () => {
    const calls = new Map<string, ReturnType<typeof deferred<string>>>();
    const { rerender } = render(<Probe query="a" calls={calls} />);
    await act(async () => calls.get("a")!.resolve("A"));
    expect(screen.getByText("a: A")).toBeTruthy();
    rerender(<Probe query="b" calls={calls} />);
    expect(screen.getByText("loading")).toBeTruthy();
    rerender(<Probe query="c" calls={calls} />);
    await act(async () => calls.get("b")!.resolve("B"));
    expect(screen.getByText("loading")).toBeTruthy();
    await act(async () => calls.get("c")!.resolve("C"));
    expect(screen.getByText("c: C")).toBeTruthy();
  });
});
